"""Two generate workers (separate `manage.py rqworker` processes, as on two GPU machines) share one queue.

Every job runs exactly once, and the fair order (round robin by user) holds across the two workers. Both
workers share only what separate machines share: the database, Redis and the media store; each has its own
data dir (work folder, model cache). How a subprocess sees the test database: see test_runs_kill.py.

To make sure both workers take part (a burst worker that starts late finds the queue empty and exits), the
test holds a database lock that claiming a job needs until each worker has taken a task from Redis; then both
claim at once.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, transaction

from gallery.models import Image
from imagineer.jobs import get_queue, queue_name
from imagineer.models import JobStatus
from training.generation.services import generation_create
from training.models import GenerationJob, GenerationOutput
from training.tests.generation_fixtures import FAST

from .runs_fixtures import wait_until
from .test_runs_kill import shared_database

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("media_root", "training_dirs")]


def _worker_env(database_env: dict, data_dir: Path, media_root: Path) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGINEER_S3_")}
    env.update(database_env)
    env.update({
        "DJANGO_SETTINGS_MODULE": "imagineer.settings.test",
        "IMAGINEER_DATA_DIR": str(data_dir),  # its own work folder and model cache, as on another machine
        "IMAGINEER_MEDIA_ROOT": str(media_root),  # stands in for the media bucket every machine reaches
        "IMAGINEER_MODELS_DIR": str(settings.MODELS_DIR),
        "IMAGINEER_DEVICE": "cpu",
        "IMAGINEER_GENERATE_BATCH_MAX_IMAGES": "1",  # one job per pass: this test is about the two workers
        "REDIS_URL": settings.REDIS_URL,
        "IMAGINEER_REDIS_PREFIX": settings.REDIS_PREFIX,
    })
    artifacts = settings.STORAGES["artifacts"]
    if artifacts["BACKEND"].endswith("FileSystemStorage"):
        env["IMAGINEER_ARTIFACTS_ROOT"] = str(artifacts["OPTIONS"]["location"])  # stored base models
    return env


@contextmanager
def claims_blocked(database_env: dict):
    """Hold a lock on the shared database that stops every worker from claiming a job, until the block ends."""
    if connection.vendor == "postgresql":
        with transaction.atomic():
            with connection.cursor() as cursor:
                # Reads go on; claim_next's SELECT ... FOR UPDATE waits for this transaction.
                cursor.execute(f"LOCK TABLE {GenerationJob._meta.db_table} IN EXCLUSIVE MODE")
            yield
        return
    path = database_env["DATABASE_URL"].removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        # WAL lets the workers read (and set up their connections) while this connection holds the write lock.
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("BEGIN IMMEDIATE")
        yield
        holder.execute("ROLLBACK")
    finally:
        holder.close()


def test_two_workers_run_each_job_exactly_once_in_fair_order(user, other_user, base_model, media_root,
                                                             redis_conn, transactional_db, tmp_path):
    alice = [generation_create(user=user, prompt=f"alice {i}", seed=100 + i, **FAST) for i in range(4)]
    bob = [generation_create(user=other_user, prompt=f"bob {i}", seed=200 + i, **FAST) for i in range(2)]
    queue = get_queue("generate")
    assert queue.count == 6

    names = [f"{settings.REDIS_PREFIX}gpu-{n}" for n in (1, 2)]
    logs = [tmp_path / f"{name.rsplit(':', 1)[-1]}.log" for name in names]
    workers: list[subprocess.Popen] = []

    def worker_logs() -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-4000:]}" for log in logs if log.exists())

    with shared_database(tmp_path) as database_env:
        try:
            with claims_blocked(database_env):
                for name, log in zip(names, logs, strict=True):
                    with log.open("w") as out:
                        workers.append(subprocess.Popen(
                            [sys.executable, "manage.py", "rqworker", queue_name("generate"), "--worker-class",
                             "imagineer.worker.WarmWorker", "--burst", "--name", name],
                            cwd=ROOT, env=_worker_env(database_env, tmp_path / name.rsplit(":", 1)[-1], media_root),
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                        ))
                # Each worker has taken one task from Redis and waits on the lock to claim a row.
                try:
                    wait_until(lambda: len(queue.started_job_registry.get_job_ids()) == 2
                               or any(w.poll() is not None for w in workers), timeout=240, interval=0.1)
                except AssertionError:
                    raise AssertionError("the workers did not both start a task\n" + worker_logs()) from None
                assert all(w.poll() is None for w in workers), worker_logs()
            for worker in workers:
                assert worker.wait(timeout=300) == 0, worker_logs()
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait(timeout=30)

    jobs = {job.pk: job for job in GenerationJob.objects.all()}
    assert len(jobs) == 6
    assert {job.status for job in jobs.values()} == {JobStatus.SUCCEEDED}, [job.error for job in jobs.values()]
    # Exactly once: each row was picked up once and made its one image once; nothing else was made.
    assert [job.attempts for job in jobs.values()] == [1] * 6
    outputs = list(GenerationOutput.objects.values_list("job_id", "image_id", "seed"))
    assert sorted(job_id for job_id, _, _ in outputs) == sorted(jobs)
    assert len({image_id for _, image_id, _ in outputs}) == 6
    assert {(job_id, seed) for job_id, _, seed in outputs} == {(pk, job.seed) for pk, job in jobs.items()}
    assert Image.objects.filter(source="generated").count() == 6
    assert failed_tasks(queue) == [] and len(queue.finished_job_registry.get_job_ids()) == 6

    # Both workers ran jobs: each row records the task that ran it, and RQ the worker that ran the task.
    from rq.job import Job as RQJob

    ran_on = {RQJob.fetch(job.rq_job_id, connection=redis_conn).worker_name for job in jobs.values()}
    assert ran_on == set(names)

    # Fair across workers: round robin by user, each user's own jobs oldest first.
    started = sorted(jobs.values(), key=lambda job: (job.started_at, job.pk))
    order = [job.pk for job in started]
    a, b = [job.pk for job in alice], [job.pk for job in bob]
    assert set(order[:2]) == {a[0], b[0]}, "each user's first job starts before anyone's second"
    assert max(order.index(pk) for pk in b) < min(order.index(a[2]), order.index(a[3])), (
        "bob's jobs start before alice's third and fourth")
    assert [pk for pk in order if pk in a] == a and [pk for pk in order if pk in b] == b


def failed_tasks(queue) -> list[str]:
    return list(queue.failed_job_registry.get_job_ids())
