"""A worker process killed mid-run (SIGKILL): the reaper hands the run back and it resumes at its checkpoint.

The worker is a real `manage.py rqworker` subprocess. It must see the test database: on PostgreSQL it
connects to the test database by name; SQLite's test database lives in this process's memory, so it is
copied to a file for the worker and copied back after the kill.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection
from django.utils import timezone

from imagineer.jobs import get_queue, queue_name, reap_stale_jobs
from imagineer.models import JobStatus
from training.models import LoraModel
from training.runs import services
from training.runs.artifacts import stored_checkpoints

from .runs_fixtures import FAST, dataset_folders, wait_until

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("media_root", "training_dirs")]


@contextmanager
def shared_database(folder: Path):
    """Yield the environment a subprocess needs to use this test's database; sync back on exit."""
    settings_dict = connection.settings_dict
    if connection.vendor == "postgresql":
        auth = quote(settings_dict["USER"] or "", safe="")
        if settings_dict["PASSWORD"]:
            auth += ":" + quote(settings_dict["PASSWORD"], safe="")
        host = settings_dict["HOST"] or "localhost"
        port = f":{settings_dict['PORT']}" if settings_dict["PORT"] else ""
        yield {"DATABASE_URL": f"postgres://{auth}@{host}{port}/{settings_dict['NAME']}"}
        return
    assert connection.vendor == "sqlite"
    if not connection.is_in_memory_db():
        yield {"DATABASE_URL": f"sqlite:///{Path(settings_dict['NAME']).resolve()}"}
        return
    path = folder / "shared.sqlite3"
    connection.ensure_connection()
    with sqlite3.connect(path) as target:
        connection.connection.backup(target)
    try:
        yield {"DATABASE_URL": f"sqlite:///{path}"}
    finally:
        with sqlite3.connect(path) as source:
            source.backup(connection.connection)


def test_a_killed_worker_is_reaped_and_the_run_resumes_at_its_last_checkpoint(
    user, run_album, tiny_base_model, settings, media_root, redis_conn, run_worker, tmp_path
):
    shapes, _ = run_album
    run = services.run_create(owner=user, album_ids=[shapes.pk], name="Killed",
                              params={**FAST, "steps": 24, "batch_size": 1, "checkpoint_every": 3})
    log = (tmp_path / "worker.log").open("w")
    try:
        with shared_database(tmp_path) as database_env:
            env = {
                **os.environ,
                **database_env,
                "DJANGO_SETTINGS_MODULE": "imagineer.settings.test",
                "IMAGINEER_DATA_DIR": str(tmp_path / "data"),
                "IMAGINEER_MEDIA_ROOT": str(media_root),
                "IMAGINEER_MODELS_DIR": str(settings.MODELS_DIR),
                "IMAGINEER_WORK_DIR": str(settings.WORK_DIR),
                "IMAGINEER_ARTIFACTS_ROOT": str(settings.STORAGES["artifacts"]["OPTIONS"]["location"]),
                "IMAGINEER_CACHE_DIR": str(tmp_path / "worker-cache"),
                "IMAGINEER_DEVICE": "cpu",
                "REDIS_URL": settings.REDIS_URL,
                "IMAGINEER_REDIS_PREFIX": settings.REDIS_PREFIX,
            }
            worker = subprocess.Popen(
                [sys.executable, "manage.py", "rqworker", queue_name("train"), "--worker-class",
                 "imagineer.worker.WarmWorker", "--burst"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
            try:
                # Killed once a checkpoint is in storage, where any worker resumes from.
                wait_until(lambda: stored_checkpoints(run) or worker.poll() is not None, timeout=240, interval=0.02)
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()
                os.kill(worker.pid, signal.SIGKILL)
            finally:
                if worker.poll() is None:
                    os.kill(worker.pid, signal.SIGKILL)
                worker.wait(timeout=30)
        run.refresh_from_db()
        saved = services.latest_checkpoint_step(run)
        assert run.status == JobStatus.RUNNING and run.attempts == 1
        # The row lags the files by up to one progress write; the stored checkpoint is what a resume uses.
        assert saved is not None and 3 <= saved < 24 and run.step >= 1
        assert dataset_folders(settings)  # the dead worker could not clean up; the resumed attempt will

        # The heartbeat stops with the process; once it is stale the reaper queues the run again.
        counts = reap_stale_jobs(now=timezone.now() + timedelta(seconds=settings.JOB_STALE_AFTER + 5))
        assert counts["requeued"] == 1
        run.refresh_from_db()
        assert run.status == JobStatus.QUEUED and "resuming from the last checkpoint" in run.message

        run_worker("train")
        run.refresh_from_db()
        assert run.status == JobStatus.SUCCEEDED, run.error
        assert run.attempts == 2 and run.resumed_from == saved and run.step == 24
        assert [step for step, _ in run.loss_history] == list(range(1, 25))  # no step repeated or lost
        assert LoraModel.objects.filter(training_run=run).exists()
        assert dataset_folders(settings) == []
    finally:
        log.close()
        # The killed worker's job stays in RQ's started registry, which RQ cannot remove entries from.
        queue = get_queue("train")
        redis_conn.delete(queue.started_job_registry.key)
