"""No Docker engine runs here: check what can be checked of the image and compose files."""

import importlib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_file_parses_and_has_every_service():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"web", "worker", "gpu-worker", "redis", "postgres", "migrate"} <= set(services)
    assert "media" in compose["volumes"]
    assert services["worker"]["volumes"] == ["media:/data"]
    env = services["web"]["environment"]
    assert env["DATABASE_URL"].startswith("postgres://") and env["REDIS_URL"].startswith("redis://")


def test_compose_worker_commands_name_real_queues_and_worker_classes():
    from django.conf import settings

    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    for name, queues in (("worker", {"default", "scrape", "label"}), ("gpu-worker", {"train", "generate"})):
        command = services[name]["command"]
        assert command[:3] == ["python", "manage.py", "rqworker"]
        worker_class = command[command.index("--worker-class") + 1]
        module, cls = worker_class.rsplit(".", 1)
        assert hasattr(importlib.import_module(module), cls)
        assert set(command[3:command.index("--worker-class")]) == queues
        assert queues <= set(settings.JOB_QUEUES)  # compose sets no IMAGINEER_REDIS_PREFIX: the plain names


def test_serve_runs_the_same_worker_commands_as_compose():
    from imagineer.management.commands import serve

    assert set(serve.CPU_QUEUES) == {"default", "scrape", "label"}
    assert set(serve.GPU_QUEUES) == {"train", "generate"}


def test_dockerfile_uses_slim_python_a_non_root_user_collectstatic_and_gunicorn():
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    assert "USER imagineer" in text
    assert "collectstatic --noinput" in text
    assert '"gunicorn", "imagineer.wsgi"' in text
    assert '"torch==2.13.0"' in text


def test_requirements_are_all_pinned_and_torch_is_exact():
    lines = [
        line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert all("==" in line for line in lines), [line for line in lines if "==" not in line]
    assert "torch==2.13.0" in lines
