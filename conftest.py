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
    import django_rq
    from django.conf import settings

    conn = django_rq.get_connection("default")
    conn.ping()

    def empty():
        for name in settings.JOB_QUEUES:
            queue = django_rq.get_queue(name)
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
        import django_rq

        qs = [django_rq.get_queue(name) for name in (queues or ("default",))]
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
def ingest(db, media_root):
    """Ingest a generated picture (or given bytes) for an owner; returns the Image row."""
    from gallery.services import image_ingest
    from imagineer.testing import image_bytes

    def run(owner, data=None, *, seed=1, fmt="JPEG", **kwargs):
        default_name = "" if data is not None else f"img{seed}.{fmt.lower()}"
        data = data if data is not None else image_bytes(fmt, seed=seed)
        return image_ingest(owner=owner, data=data, filename=kwargs.pop("filename", default_name), **kwargs).image

    return run
