"""Faults against a real running server: Redis restarts, the database going away, a failing media store."""

import json

import pytest
import requests

from imagineer.testing import image_bytes
from tests.deployment import Deployment, csrf_from

pytestmark = pytest.mark.slow


@pytest.fixture
def deployment(tmp_path, redis_server):
    deployment = Deployment(tmp_path, redis_url=redis_server.url)
    deployment.prepare()
    deployment.create_user("alice", "a-Strong-pass-42")
    yield deployment
    deployment.stop()


def _count(deployment, model: str) -> int:
    app, name = model.split(".")
    return int(deployment.shell(f"from {app}.models import {name}; print({name}.objects.count())").strip())


def test_pages_keep_working_while_redis_restarts_and_jobs_fail_cleanly(deployment, redis_server):
    deployment.start_web()
    session = deployment.login("alice", "a-Strong-pass-42")
    upload = session.post(deployment.url + "/gallery/upload/file/", files={"file": ("a.png", image_bytes("PNG"))},
                          headers={"X-CSRFToken": csrf_from(session)}, timeout=30)
    assert upload.status_code == 200, upload.text
    image_id = upload.json()["id"]

    redis_server.stop()
    for path in ("/", "/gallery/", "/gallery/mine/", f"/gallery/images/{image_id}/", "/gallery/albums/",
                 "/labeling/", "/settings/"):
        response = session.get(deployment.url + path, timeout=30)
        assert response.status_code == 200, (path, response.status_code)
    health = session.get(deployment.url + "/healthz", timeout=30)
    assert health.status_code == 503 and health.json()["redis"] == "down"
    # Uploads still work without the queue (thumbnails wait, `make_thumbnails` catches up).
    second = session.post(deployment.url + "/gallery/upload/file/",
                          files={"file": ("b.png", image_bytes("PNG", seed=2))},
                          headers={"X-CSRFToken": csrf_from(session)}, timeout=30)
    assert second.status_code == 200
    # Starting a job says why it cannot, and leaves nothing half-made.
    started = session.post(deployment.url + "/labeling/start/", data={
        "ids": str(image_id), "backend": "local", "csrfmiddlewaretoken": csrf_from(session)},
        headers={"Referer": deployment.url + "/labeling/"}, timeout=30)
    assert started.status_code == 200 and "not reachable" in started.text
    assert _count(deployment, "labeling.LabelingJob") == 0

    redis_server.start()
    health = session.get(deployment.url + "/healthz", timeout=30)
    assert health.status_code == 200
    started = session.post(deployment.url + "/labeling/start/", data={
        "ids": str(image_id), "backend": "local", "csrfmiddlewaretoken": csrf_from(session)},
        headers={"Referer": deployment.url + "/labeling/"}, timeout=30, allow_redirects=False)
    assert started.status_code == 302 and "/labeling/jobs/" in started.headers["Location"]
    assert _count(deployment, "labeling.LabelingJob") == 1


def test_database_down_gives_503_health_and_no_stack_traces(tmp_path, redis_server):
    deployment = Deployment(tmp_path, redis_url=redis_server.url,
                            database_url="postgres://postgres@127.0.0.1:1/nothing")
    try:
        deployment.start_web(workers=1)
        health = requests.get(deployment.url + "/healthz", timeout=30)
        assert health.status_code == 503
        assert health.json() == {"database": "down", "redis": "ok", "workers": 0}
        for path in ("/", "/gallery/", "/accounts/login/", "/api/me", "/gallery/images/1/"):
            response = requests.get(deployment.url + path, timeout=30)
            assert response.status_code in (200, 401, 404, 500, 503), path
            for leak in ("Traceback", "OperationalError", "psycopg", "File \""):
                assert leak not in response.text, (path, leak)
        gallery = requests.get(deployment.url + "/gallery/", timeout=30)
        assert gallery.status_code == 500 and "Something went wrong" in gallery.text
    finally:
        deployment.stop()


def test_a_failing_media_store_gives_a_clear_error_and_no_orphan_row(tmp_path, redis_server):
    media = tmp_path / "media"
    media.mkdir()
    (media / "originals").write_text("a file where the originals folder must go: every write fails")
    deployment = Deployment(tmp_path, redis_url=redis_server.url, extra_env={"IMAGINEER_MEDIA_ROOT": str(media)})
    try:
        deployment.prepare()
        deployment.create_user("alice", "a-Strong-pass-42")
        deployment.start_web(workers=1)
        session = deployment.login("alice", "a-Strong-pass-42")
        response = session.post(deployment.url + "/gallery/upload/file/",
                                files={"file": ("a.png", image_bytes("PNG"))},
                                headers={"X-CSRFToken": csrf_from(session)}, timeout=30)
        assert response.status_code == 507
        body = json.loads(response.text)
        assert body["ok"] is False and "could not be stored" in body["error"]
        assert _count(deployment, "gallery.Image") == 0
    finally:
        deployment.stop()
