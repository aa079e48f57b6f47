"""Shared pytest fixtures: users, logged-in clients, the real Redis queues and a burst worker."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model


@pytest.fixture
def make_user(db):
    counter = {"n": 0}

    def make(username: str | None = None, *, staff: bool = False, password: str = "pw-for-tests-123", **extra):  # noqa: S107
        counter["n"] += 1
        username = username or f"user{counter['n']}"
        user = get_user_model().objects.create_user(
            username=username, email=f"{username}@example.com", password=password, is_staff=staff, **extra
        )
        return user

    return make


@pytest.fixture
def user(make_user):
    return make_user("alice")


@pytest.fixture
def other_user(make_user):
    return make_user("bob")


@pytest.fixture
def staff_user(make_user):
    return make_user("staff", staff=True, is_superuser=True)


@pytest.fixture
def user_client(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def other_client(db, other_user):
    from django.test import Client

    c = Client()
    c.force_login(other_user)
    return c


@pytest.fixture
def staff_client(db, staff_user):
    from django.test import Client

    c = Client()
    c.force_login(staff_user)
    return c


@pytest.fixture
def redis_conn():
    """The real Redis from REDIS_URL, with our queues emptied before and after the test."""
    from django.conf import settings

    from imagineer.jobs import get_queue, get_redis

    conn = get_redis()
    conn.ping()

    def empty():
        for name in settings.JOB_QUEUES:
            queue = get_queue(name)
            queue.empty()
            for registry in (queue.failed_job_registry, queue.finished_job_registry, queue.canceled_job_registry):
                for job_id in registry.get_job_ids():
                    registry.remove(job_id, delete_job=True)
            # rq 3's StartedJobRegistry.remove() is not implemented; a killed job's entry is just dropped.
            conn.delete(queue.started_job_registry.key)

    empty()
    yield conn
    empty()


@pytest.fixture
def run_worker(redis_conn, transactional_db):
    """Run a burst worker (no fork, so it shares the test database) over the given queues."""
    from imagineer.worker import WarmWorker

    def run(*queues: str, max_jobs: int | None = None) -> None:
        from imagineer.jobs import get_queue

        qs = [get_queue(name) for name in (queues or ("default",))]
        worker = WarmWorker(qs, connection=redis_conn)
        worker.work(burst=True, max_jobs=max_jobs, with_scheduler=False)

    return run


@pytest.fixture
def media_root(settings, tmp_path):
    """Store media files in this test's own folder."""
    root = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": root}},
    }
    settings.MEDIA_ROOT = root
    return root


@pytest.fixture
def s3_endpoint():
    """moto's S3 server on 127.0.0.1, standing in for an S3-compatible store; yields its URL."""
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def artifacts_root(settings, tmp_path):
    """Store job artifacts (STORAGES["artifacts"]) in this test's own folder."""
    root = tmp_path / "artifacts"
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                      "OPTIONS": {"location": root, "allow_overwrite": True}},
    }
    return root


@pytest.fixture
def ingest(db, media_root):
    """Ingest a generated picture (or given bytes) for an owner; returns the Image row."""
    from gallery.services import image_ingest
    from imagineer.testing import image_bytes

    def run(owner, data=None, *, seed=1, fmt="JPEG", **kwargs):
        default_name = "" if data is not None else f"img{seed}.{fmt.lower()}"
        data = data if data is not None else image_bytes(fmt, seed=seed)
        return image_ingest(owner=owner, data=data, filename=kwargs.pop("filename", default_name), **kwargs).image

    return run
