"""No Docker engine runs here: check what can be checked of the image and compose files."""

import importlib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


APP_SERVICES = {"web", "worker", "gpu-worker", "migrate"}
WORKERS = {"worker", "gpu-worker"}


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _named_volumes(service: dict, declared: set[str]) -> set[str]:
    names = set()
    for mount in service.get("volumes", []):
        source = mount.split(":", 1)[0] if isinstance(mount, str) else mount.get("source", "")
        if source in declared:
            names.add(source)
    return names


def test_compose_file_parses_and_has_every_service():
    compose = _compose()
    services = compose["services"]
    assert {"web", "worker", "gpu-worker", "redis", "postgres", "migrate", "minio", "minio-init"} <= set(services)
    assert all(services[name]["image"] == "imagineer:latest" for name in APP_SERVICES)
    env = services["web"]["environment"]
    assert env["DATABASE_URL"].startswith("postgres://") and env["REDIS_URL"].startswith("redis://")


def test_no_volume_is_shared_between_the_web_and_a_worker():
    compose = _compose()
    services, declared = compose["services"], set(compose.get("volumes") or {})
    web = _named_volumes(services["web"], declared)
    for worker in WORKERS:
        assert not web & _named_volumes(services[worker], declared), worker
    assert not _named_volumes(services["worker"], declared) & _named_volumes(services["gpu-worker"], declared)
    # No bind mounts either: nothing of one machine's disk is another's.
    for name in APP_SERVICES:
        for mount in services[name].get("volumes", []):
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount.get("source", "")
            assert source in declared, (name, mount)


def test_every_app_service_keeps_media_and_artifacts_in_the_minio_bucket():
    compose = _compose()
    services = compose["services"]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        for variable in ("IMAGINEER_S3_BUCKET", "IMAGINEER_S3_ENDPOINT_URL", "IMAGINEER_S3_ACCESS_KEY",
                         "IMAGINEER_S3_SECRET_KEY", "IMAGINEER_S3_REGION"):
            assert env.get(variable), (name, variable)
        assert env["IMAGINEER_S3_ENDPOINT_URL"] == "http://minio:9000", name
        assert "IMAGINEER_ARTIFACTS_ROOT" not in env and "IMAGINEER_MEDIA_ROOT" not in env, name
        # They start once the bucket exists.
        assert services[name]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully", name
    assert services["gpu-worker"]["environment"]["IMAGINEER_DEVICE"] == "cuda"
    assert services["gpu-worker"]["environment"]["IMAGINEER_CACHE_DIR"].startswith("/data/")


def test_minio_runs_and_a_one_shot_service_creates_the_bucket():
    compose = _compose()
    services = compose["services"]
    minio, init = services["minio"], services["minio-init"]
    assert "minio/minio" in minio["image"] and minio["command"][:2] == ["server", "/data"]
    assert _named_volumes(minio, set(compose["volumes"])) == {"minio"}
    assert minio["healthcheck"]["test"]
    # MinIO's root account is the one the app uses, with the same bucket name.
    app_env = services["web"]["environment"]
    assert minio["environment"]["MINIO_ROOT_USER"] == app_env["IMAGINEER_S3_ACCESS_KEY"]
    assert minio["environment"]["MINIO_ROOT_PASSWORD"] == app_env["IMAGINEER_S3_SECRET_KEY"]
    assert init["environment"]["S3_BUCKET"] == app_env["IMAGINEER_S3_BUCKET"]
    assert "minio/mc" in init["image"] and init["restart"] == "no"
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    script = " ".join(init["command"])
    assert "mc mb --ignore-existing" in script and "$$S3_BUCKET" in script and "http://minio:9000" in script


def test_compose_worker_commands_name_real_queues_and_worker_classes():
    from django.conf import settings

    services = _compose()["services"]
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
