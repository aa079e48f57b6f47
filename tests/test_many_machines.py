"""Many machines, no shared disk: a web and three workers as separate processes, each with its own data dir
(MODELS_DIR, WORK_DIR, LOG_DIR, cache), sharing only PostgreSQL, Redis and an S3 store (moto's server).

upload → label (local) → train on GPU worker 1 → cancel at a checkpoint → resume on GPU worker 2, which continues
at the checkpoint step → generate on worker 2 with the LoRA → download the LoRA (both formats), a sample image and
the log from the web. No row in the database holds an absolute path.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from imagineer.testing import image_bytes
from tests.deployment import Deployment

pytestmark = pytest.mark.slow


def _postgres_url() -> str | None:
    """A fresh database on the PostgreSQL that DATABASE_URL (or the local default) names; None if none answers."""
    import psycopg

    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    if not base.startswith("postgres"):
        return None
    name = f"imagineer_machines_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(base)
    admin = urlunsplit(parts._replace(path="/postgres"))
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error:
        return None
    return urlunsplit(parts._replace(path=f"/{name}"))


def _drop(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    with psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def cluster(tmp_path, redis_server, s3_endpoint):
    import boto3

    database_url = _postgres_url()
    if database_url is None:
        pytest.skip("needs a PostgreSQL server (DATABASE_URL or 127.0.0.1:5432): the machines share no disk")
    boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="k", aws_secret_access_key="s",
                 region_name="us-east-1").create_bucket(Bucket="imagineer")
    shared = {
        "IMAGINEER_S3_BUCKET": "imagineer", "IMAGINEER_S3_ENDPOINT_URL": s3_endpoint,
        "IMAGINEER_S3_ACCESS_KEY": "k", "IMAGINEER_S3_SECRET_KEY": "s", "IMAGINEER_S3_REGION": "us-east-1",
        "IMAGINEER_DEVICE": "cpu", "IMAGINEER_KEEP_CHECKPOINTS": "2", "IMAGINEER_LOG_UPLOAD_SECONDS": "1",
    }
    machines = {name: Deployment(tmp_path / name, redis_url=redis_server.url, database_url=database_url,
                                 extra_env=shared) for name in ("web", "cpu", "gpu1", "gpu2")}
    for machine in machines.values():
        machine.data_dir.mkdir(parents=True)
    try:
        yield machines
    finally:
        for machine in machines.values():
            machine.stop()
        _drop(database_url)


def _wait(fetch, done, timeout=300, interval=0.3):
    deadline = time.monotonic() + timeout
    value = fetch()
    while not done(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last state: {value}")
        time.sleep(interval)
        value = fetch()
    return value


def test_the_loop_runs_across_machines_that_share_no_disk(cluster):
    web, cpu, gpu1, gpu2 = cluster["web"], cluster["cpu"], cluster["gpu1"], cluster["gpu2"]
    web.prepare()
    # The tiny model is built on the web machine and stored once: the GPU workers never see the web's disk.
    web.manage("build_tiny_model")
    web.create_user("alice", "pw-alice-123456")
    token = web.shell(
        "from django.contrib.auth import get_user_model as g\n"
        "from imagineer.services import api_token_create\n"
        "print(api_token_create(user=g().objects.get(username='alice'), name='t')[1])").strip().splitlines()[-1]
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {token}"
    web.start_web()
    cpu.start_worker("cpu", ["default", "label"])
    gpu1.start_worker("gpu1", ["train", "generate"], warm=True)
    base = web.url + "/api"

    # Upload into an album through the web.
    album = api.post(base + "/albums", json={"name": "Shapes"}, timeout=30).json()
    for seed in range(4):
        response = api.post(base + "/images", files={"file": (f"s{seed}.png", image_bytes("PNG", seed=seed))},
                            data={"album": album["id"]}, timeout=60)
        assert response.status_code == 201, response.text

    # Label the album with the offline local backend on the CPU worker.
    session = web.login("alice", "pw-alice-123456")
    session.get(web.url + "/labeling/", timeout=30)
    response = session.post(web.url + "/labeling/start/", data={
        "csrfmiddlewaretoken": session.cookies["csrftoken"], "backend": "local", "album": album["id"]},
        headers={"Referer": web.url + "/labeling/"}, timeout=30, allow_redirects=False)
    assert response.status_code == 302, response.text[:300]
    job_id = int(re.search(r"/jobs/(\d+)/", response.headers["Location"]).group(1))
    labeled = _wait(lambda: json.loads(web.shell(
        f"from labeling.models import LabelingJob as J; print(__import__('json').dumps(J.objects.filter(pk={job_id})"
        ".values('status', 'error')[0]))").strip().splitlines()[-1]), lambda v: v["status"] in ("succeeded", "failed"))
    assert labeled["status"] == "succeeded", labeled

    # Train on GPU worker 1; cancel once a checkpoint is stored.
    run = api.post(base + "/training/runs", json={
        "album_ids": [album["id"]], "name": "Far style", "steps": 60, "batch_size": 1, "resolution": 32,
        "rank": 4, "learning_rate": 0.01, "checkpoint_every": 3, "sample_every": 3, "sample_prompt": "a shape"},
        timeout=30).json()
    run_url = f"{base}/training/runs/{run['id']}"
    _wait(lambda: api.get(run_url, timeout=30).json(), lambda r: r["step"] >= 4 or r["status"] == "failed")
    assert api.post(run_url + "/cancel", timeout=30).status_code == 200
    cancelled = _wait(lambda: api.get(run_url, timeout=30).json(), lambda r: r["status"] != "running")
    assert cancelled["status"] == "cancelled", cancelled
    stopped_at = cancelled["step"]
    assert 3 <= stopped_at < 60
    gpu1.stop()  # this machine is gone; its disk with it

    # Resume from the web; GPU worker 2 (its own empty disk) continues at the checkpoint step.
    gpu2.start_worker("gpu2", ["train", "generate"], warm=True)
    resumed = api.post(run_url + "/resume", timeout=30)
    assert resumed.status_code == 200, resumed.text
    assert f"resume from step {stopped_at}" in resumed.json()["message"]
    done = _wait(lambda: api.get(run_url, timeout=30).json(), lambda r: r["status"] in ("succeeded", "failed"),
                 timeout=600)
    assert done["status"] == "succeeded", done
    assert done["resumed_from"] == stopped_at and done["step"] == 60
    log = session.get(f"{web.url}/training/runs/{run['id']}/download/log/", timeout=30)
    assert log.status_code == 200
    assert f"resuming from the checkpoint at step {stopped_at}" in log.text and "attempt 2" in log.text

    # Generate with the LoRA on worker 2.
    lora = api.get(base + "/training/loras", timeout=30).json()["items"][0]
    generation = api.post(base + "/generations", json={
        "prompt": "a shape", "loras": [{"name": lora["name"], "weight": 0.8}], "width": 32, "height": 32,
        "steps": 2, "scheduler": "euler", "seed": 5}, timeout=30).json()
    made = _wait(lambda: api.get(f"{base}/generations/{generation['id']}", timeout=30).json(),
                 lambda g: g["status"] in ("succeeded", "failed"))
    assert made["status"] == "succeeded", made

    # Downloads from the web: both LoRA formats, a sample, the log.
    for fmt in ("diffusers", "kohya"):
        response = session.get(f"{web.url}/training/loras/{lora['id']}/download/{fmt}/", timeout=30)
        assert response.status_code == 200 and response.content[:8] != b"" and len(response.content) > 1000
    page = session.get(f"{web.url}/training/runs/{run['id']}/", timeout=30).text
    sample_url = re.search(r'/training/runs/\d+/samples/\d+/\d+\.png', page).group(0)
    sample = session.get(web.url + sample_url, timeout=30)
    assert sample.status_code == 200 and sample.content.startswith(b"\x89PNG")

    # Every worker pulled the base model from storage into its own cache; none of them holds the web's files.
    assert any((gpu2.data_dir / "cache").iterdir())
    assert not (gpu2.data_dir / "models" / "base").exists()

    # No row in the database names a path of any machine.
    found = web.shell(
        "import json\n"
        "from django.apps import apps\n"
        "from django.db import models\n"
        "hits = []\n"
        "for model in apps.get_models():\n"
        "    if not model._meta.managed:\n"
        "        continue\n"
        "    fields = [f for f in model._meta.concrete_fields if isinstance(f, (models.CharField, models.TextField,"
        " models.JSONField, models.FileField))]\n"
        "    for row in model.objects.values(*[f.attname for f in fields]):\n"
        "        text = json.dumps(row, default=str)\n"
        f"        if {str(web.base_dir.parent)!r} in text or '\"/tmp/' in text or '\"/root' in text:\n"
        "            hits.append((model.__name__, text[:300]))\n"
        "print(json.dumps(hits))\n").strip().splitlines()[-1]
    assert json.loads(found) == []
