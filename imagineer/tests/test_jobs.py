"""The shared job plumbing, run for real through Redis and an RQ burst worker."""

import threading
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from imagineer.jobs import (
    QueueUnavailable,
    enqueue_job,
    ensure_queue_available,
    get_queue,
    job_cancel,
    reap_stale_jobs,
    run_job,
)
from imagineer.models import JobStatus
from imagineer.tests.jobsapp.models import EchoJob


def _start(**fields) -> EchoJob:
    with transaction.atomic():
        job = EchoJob.objects.create(**fields)
        enqueue_job(job)
    return job


def test_a_job_runs_through_redis_and_a_burst_worker(run_worker):
    job = _start(steps=3)
    assert get_queue("default").count == 1
    run_worker("default")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert job.done_steps == 3
    assert job.progress == 1.0
    assert job.attempts == 1
    assert job.started_at and job.finished_at and job.heartbeat_at
    assert job.rq_job_id


def test_a_user_facing_failure_is_recorded(run_worker):
    job = _start(steps=2, fail_with="The album is empty.")
    run_worker("default")
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error == "The album is empty."


def test_a_queued_job_is_cancelled_at_once_and_never_runs(run_worker):
    job = _start(steps=2)
    assert job_cancel(job) is True
    assert job.status == JobStatus.CANCELLED
    run_worker("default")
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert job.done_steps == 0


def test_a_running_job_stops_at_its_next_check(run_worker):
    job = _start(steps=5)
    # Simulate the user pressing cancel after the worker picked it up: the flag is
    # set on the row, and the body's next ctx.update() sees it.
    EchoJob.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, cancel_requested=True)
    EchoJob.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED)
    run_worker("default")
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert job.done_steps == 0


def test_cancel_inside_the_loop_keeps_the_work_done_so_far(run_worker, monkeypatch):
    job = _start(steps=5)
    from imagineer import jobs as jobs_module

    original = jobs_module.JobContext.update

    def update_then_cancel(self, **kwargs):
        if kwargs.get("done_steps") == 2:
            EchoJob.objects.filter(pk=self.job.pk).update(cancel_requested=True)
        return original(self, **kwargs)

    monkeypatch.setattr(jobs_module.JobContext, "update", update_then_cancel)
    run_worker("default")
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert job.done_steps == 2


def test_cancelling_a_finished_job_changes_nothing(run_worker):
    job = _start(steps=1)
    run_worker("default")
    job.refresh_from_db()
    assert job_cancel(job) is False
    assert job.status == JobStatus.SUCCEEDED


@pytest.mark.django_db
def test_the_reaper_fails_a_running_row_whose_heartbeat_went_stale(redis_conn):
    old = timezone.now() - timedelta(hours=1)
    stale = EchoJob.objects.create(status=JobStatus.RUNNING, started_at=old, heartbeat_at=old)
    fresh = EchoJob.objects.create(status=JobStatus.RUNNING, started_at=old, heartbeat_at=timezone.now())
    counts = reap_stale_jobs()
    assert counts["failed"] == 1
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.status == JobStatus.FAILED
    assert "stopped responding" in stale.error
    assert stale.finished_at is not None
    assert fresh.status == JobStatus.RUNNING


def test_the_reaper_hands_a_resumable_row_back_to_the_queue(run_worker):
    old = timezone.now() - timedelta(hours=1)
    job = EchoJob.objects.create(
        status=JobStatus.RUNNING, started_at=old, heartbeat_at=old, steps=4, done_steps=2, resume=True, attempts=1
    )
    counts = reap_stale_jobs()
    assert counts["requeued"] == 1
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED
    run_worker("default")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert job.done_steps == 4
    assert job.attempts == 2


@pytest.mark.django_db
def test_the_reaper_fails_queued_rows_that_redis_lost(redis_conn):
    job = EchoJob.objects.create(
        status=JobStatus.QUEUED, rq_job_id="jobsapp.echojob-999-gone", created_at=timezone.now() - timedelta(hours=1)
    )
    assert reap_stale_jobs()["lost"] == 1
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert "lost" in job.error


@pytest.mark.django_db
def test_the_reaper_ends_a_job_that_ignores_cancel(redis_conn):
    long_ago = timezone.now() - timedelta(hours=1)
    job = EchoJob.objects.create(
        status=JobStatus.RUNNING, started_at=long_ago, heartbeat_at=timezone.now(),
        cancel_requested=True, cancel_requested_at=long_ago,
    )
    assert reap_stale_jobs()["force_cancelled"] == 1
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED


# -- claiming: one run per row ---------------------------------------------------------------------------

def _steps(ctx):
    for step in range(ctx.job.done_steps, ctx.job.steps):
        ctx.update(progress=(step + 1) / ctx.job.steps, message=f"step {step + 1}", done_steps=step + 1)


def test_a_second_worker_never_claims_a_row_that_runs_with_a_fresh_heartbeat(transactional_db):
    started = timezone.now() - timedelta(minutes=5)
    live = EchoJob.objects.create(status=JobStatus.RUNNING, started_at=started, heartbeat_at=timezone.now(),
                                  attempts=1, steps=2, rq_job_id="first-worker-task")
    ran = []
    assert run_job(EchoJob, live.pk, ran.append) is None
    assert run_job(EchoJob, live.pk, ran.append, task_id="second-worker-task") is None
    # A cancel the first worker has not seen yet is its to act on, not the second worker's.
    EchoJob.objects.filter(pk=live.pk).update(cancel_requested=True)
    assert run_job(EchoJob, live.pk, ran.append) is None
    live.refresh_from_db()
    assert ran == []
    assert (live.status, live.attempts, live.rq_job_id, live.done_steps) == (
        JobStatus.RUNNING, 1, "first-worker-task", 0)
    assert live.started_at == started and live.finished_at is None


def test_a_running_row_whose_heartbeat_went_stale_is_claimed_and_resumed(transactional_db):
    old = timezone.now() - timedelta(hours=1)
    job = EchoJob.objects.create(status=JobStatus.RUNNING, started_at=old, heartbeat_at=old, attempts=1,
                                 steps=3, done_steps=1, error="left over")
    assert run_job(EchoJob, job.pk, _steps) == JobStatus.SUCCEEDED
    job.refresh_from_db()
    assert (job.status, job.attempts, job.done_steps, job.error) == (JobStatus.SUCCEEDED, 2, 3, "")
    assert job.started_at == old


def test_a_row_its_caller_already_marked_running_for_its_task_is_run(transactional_db):
    # Generation's fair scheduler claims a row for its RQ task, then hands it to run_job.
    now = timezone.now()
    job = EchoJob.objects.create(status=JobStatus.RUNNING, started_at=now, heartbeat_at=now, rq_job_id="task-a")
    assert run_job(EchoJob, job.pk, _steps, task_id="task-b") is None
    assert run_job(EchoJob, job.pk, _steps, task_id="task-a") == JobStatus.SUCCEEDED
    job.refresh_from_db()
    assert (job.status, job.attempts, job.done_steps) == (JobStatus.SUCCEEDED, 1, 3)


def test_a_run_the_reaper_handed_on_stops_without_touching_the_row_its_successor_owns(run_worker, settings):
    """A database outage longer than JOB_STALE_AFTER: the reaper requeues a live run, another worker takes it.

    The first run learns at its next write that the row is no longer its own and stops there.
    """
    settings.JOB_HEARTBEAT_SECONDS = 3600  # no heartbeat writes from either run during the test
    job = EchoJob.objects.create(steps=2, resume=True)
    inside, resume = threading.Event(), threading.Event()
    first: dict = {}

    def slow_body(ctx):
        ctx.update(progress=0.1, message="first worker")
        inside.set()
        assert resume.wait(30)
        ctx.update(progress=0.2, message="first worker, after the outage", done_steps=99)

    def first_worker():
        try:
            first["status"] = run_job(EchoJob, job.pk, slow_body, task_id="first-task")
        except BaseException as exc:  # surfaced by the assertion below
            first["error"] = exc

    thread = threading.Thread(target=first_worker)
    thread.start()
    try:
        assert inside.wait(30)
        job.refresh_from_db()
        assert (job.status, job.attempts, job.rq_job_id) == (JobStatus.RUNNING, 1, "first-task")
        # The first worker cannot reach the database for longer than JOB_STALE_AFTER.
        later = timezone.now() + timedelta(seconds=settings.JOB_STALE_AFTER + 60)
        assert reap_stale_jobs(now=later)["requeued"] == 1
        run_worker("default")
        job.refresh_from_db()
        assert (job.status, job.attempts, job.done_steps) == (JobStatus.SUCCEEDED, 2, 2)
    finally:
        resume.set()
        thread.join(30)
    assert first == {"status": None}
    job.refresh_from_db()
    assert (job.status, job.attempts, job.done_steps, job.message) == (JobStatus.SUCCEEDED, 2, 2, "step 2")
    assert job.progress == 1.0


@pytest.mark.django_db(transaction=True)
def test_starting_a_job_with_redis_down_creates_nothing(settings):
    settings.RQ_QUEUES = {name: {"URL": "redis://127.0.0.1:1/0"} for name in settings.RQ_QUEUES}
    import django_rq.queues

    django_rq.queues.get_redis_connection.cache_clear() if hasattr(
        django_rq.queues.get_redis_connection, "cache_clear"
    ) else None
    with pytest.raises(QueueUnavailable, match="not reachable"):
        ensure_queue_available()
    with pytest.raises(QueueUnavailable):
        with transaction.atomic():
            job = EchoJob.objects.create()
            enqueue_job(job)
    assert EchoJob.objects.count() == 0
