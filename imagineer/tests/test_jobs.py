"""The shared job plumbing, run for real through Redis and an RQ burst worker."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from imagineer.jobs import (
    QueueUnavailable,
    enqueue_job,
    ensure_queue_available,
    job_cancel,
    reap_stale_jobs,
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
    import django_rq

    assert django_rq.get_queue("default").count == 1
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


@pytest.mark.django_db(transaction=True)
def test_starting_a_job_with_redis_down_creates_nothing(settings):
    settings.RQ_QUEUES = {name: {"URL": "redis://127.0.0.1:1/0"} for name in settings.JOB_QUEUES}
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
