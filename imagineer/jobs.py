"""Shared job plumbing: enqueue on commit, run with heartbeat/progress/cancel, reap stale rows.

Every long task is a `Job` row plus an RQ job that receives only the row's id.
Services call `enqueue_job(row)` inside their transaction; the RQ entry point
calls `run_job(Model, pk, body)`, where `body(ctx)` does the work and reports
through `ctx.update(...)`, which also raises `JobCancelled` when a user asked to stop.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from django.apps import apps
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from .models import Job, JobStatus

logger = logging.getLogger(__name__)

J = TypeVar("J", bound=Job)


class QueueUnavailable(Exception):
    """Redis cannot be reached, so no job can be started. Nothing was created."""

    def __init__(self, detail: str = ""):
        super().__init__(
            "The job queue is not reachable right now, so nothing was started. "
            "Try again in a moment." + (f" ({detail})" if detail else "")
        )


class JobCancelled(Exception):
    """Raised inside a job body when the user asked to cancel; the row ends `cancelled`."""


class JobError(Exception):
    """A failure with a message meant for the user; the row ends `failed` with this text."""


def get_redis():
    import django_rq

    return django_rq.get_connection("default")


def ensure_queue_available() -> None:
    """Fail fast, before any row is written, when Redis is down."""
    import redis

    try:
        get_redis().ping()
    except (redis.RedisError, OSError) as exc:
        raise QueueUnavailable(type(exc).__name__) from exc


def _rq_queue(name: str):
    import django_rq

    return django_rq.get_queue(name)


def enqueue_job(job: Job, *, function: str | None = None, at_front: bool = False, created: bool = True) -> None:
    """Queue `job` for its worker once the surrounding transaction commits.

    If Redis refuses at commit time a row this call's caller just `created` is deleted again and
    QueueUnavailable propagates, so a failed start leaves nothing half-made; an existing row being
    queued again (resume, reaper) is marked failed with the reason instead.
    """
    import redis

    model = type(job)
    rq_id = f"{model._meta.app_label}_{model._meta.model_name}-{job.pk}-{uuid.uuid4().hex[:8]}"
    model.objects.filter(pk=job.pk).update(rq_job_id=rq_id)
    job.rq_job_id = rq_id
    target = function or model.job_function
    if not target:
        raise ValueError(f"{model.__name__} has no job_function")

    def send() -> None:
        try:
            _rq_queue(model.queue_name).enqueue(
                target, job.pk, job_id=rq_id, at_front=at_front, result_ttl=3600, failure_ttl=7 * 86400
            )
        except (redis.RedisError, OSError) as exc:
            if created:
                model.objects.filter(pk=job.pk).delete()
            else:
                model.objects.filter(pk=job.pk).update(
                    status=JobStatus.FAILED, error=str(QueueUnavailable()), finished_at=timezone.now()
                )
            raise QueueUnavailable(type(exc).__name__) from exc

    transaction.on_commit(send)


def job_cancel(job: Job) -> bool:
    """Ask a job to stop. A queued job is cancelled at once; a running one stops at its next check.

    Returns False when the job had already ended.
    """
    model = type(job)
    now = timezone.now()
    updated = model.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
        status=JobStatus.CANCELLED,
        cancel_requested=True,
        cancel_requested_at=now,
        finished_at=now,
        message="Cancelled before it started.",
    )
    if updated:
        _cancel_rq_job(job.rq_job_id)
        job.refresh_from_db()
        return True
    updated = model.objects.filter(pk=job.pk, status=JobStatus.RUNNING, cancel_requested=False).update(
        cancel_requested=True, cancel_requested_at=now, message="Cancelling…"
    )
    job.refresh_from_db()
    return bool(updated) or (job.status == JobStatus.RUNNING and job.cancel_requested)


def _cancel_rq_job(rq_job_id: str) -> None:
    if not rq_job_id:
        return
    try:
        from rq.job import Job as RQJob

        RQJob.fetch(rq_job_id, connection=get_redis()).cancel()
    except Exception:  # the row is the source of truth; a missing RQ job is fine
        logger.debug("could not cancel rq job %s", rq_job_id, exc_info=True)


class _Heartbeat(threading.Thread):
    """Touches heartbeat_at while the job body runs, even inside one long step.

    If the worker process dies, the thread dies with it and the row goes stale.
    """

    def __init__(self, model: type[Job], pk: int):
        super().__init__(daemon=True, name=f"heartbeat-{model.job_label()}-{pk}")
        self.model, self.pk = model, pk
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.wait(settings.JOB_HEARTBEAT_SECONDS):
                try:
                    self.model.objects.filter(pk=self.pk, status=JobStatus.RUNNING).update(
                        heartbeat_at=timezone.now()
                    )
                except Exception:
                    logger.warning("heartbeat for %s %s failed", self.model.job_label(), self.pk, exc_info=True)
        finally:
            connection.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


class JobContext:
    """What a job body uses to report progress and notice cancellation."""

    def __init__(self, job: Job):
        self.job = job
        self.model = type(job)

    def update(
        self,
        *,
        progress: float | None = None,
        message: str | None = None,
        counters: dict[str, Any] | None = None,
        check_cancel: bool = True,
        **fields: Any,
    ) -> None:
        job = self.job
        values: dict[str, Any] = {"heartbeat_at": timezone.now(), **fields}
        if progress is not None:
            values["progress"] = max(0.0, min(1.0, float(progress)))
        if message is not None:
            values["message"] = message[:500]
        if counters:
            merged = {**job.counters, **counters}
            values["counters"] = merged
        for key, value in values.items():
            setattr(job, key, value)
        self.model.objects.filter(pk=job.pk).update(**values)
        if check_cancel:
            self.check_cancel()

    def cancel_requested(self) -> bool:
        requested = self.model.objects.filter(pk=self.job.pk).values_list("cancel_requested", flat=True).first()
        return bool(requested)

    def check_cancel(self) -> None:
        if self.cancel_requested():
            raise JobCancelled()


def _finish(model: type[Job], pk: int, status: str, **values: Any) -> None:
    now = timezone.now()
    model.objects.filter(pk=pk, status=JobStatus.RUNNING).update(
        status=status, finished_at=now, heartbeat_at=now, **values
    )


def run_job(model: type[J], pk: int, body: Callable[[JobContext], Any]) -> str | None:
    """Run one job row: mark it running, call `body(ctx)`, record how it ended.

    Returns the final status, or None when the row was gone or already finished.
    """
    close_old_connections()
    job = model.objects.filter(pk=pk).first()
    if job is None:
        logger.warning("%s %s no longer exists; skipping", model.job_label(), pk)
        return None
    if job.is_finished:
        return None
    now = timezone.now()
    if job.cancel_requested:
        model.objects.filter(pk=pk).update(status=JobStatus.CANCELLED, finished_at=now, message="Cancelled.")
        return JobStatus.CANCELLED
    rq_id = _current_rq_job_id() or job.rq_job_id
    claimed = model.objects.filter(pk=pk, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).update(
        status=JobStatus.RUNNING,
        started_at=job.started_at or now,
        heartbeat_at=now,
        attempts=job.attempts + 1,
        rq_job_id=rq_id,
        error="",
    )
    if not claimed:
        return None
    job.refresh_from_db()
    ctx = JobContext(job)
    heartbeat = _Heartbeat(model, pk)
    heartbeat.start()
    status: str
    try:
        body(ctx)
    except JobCancelled:
        status = JobStatus.CANCELLED
        _finish(model, pk, status, message="Cancelled.")
    except JobError as exc:
        status = JobStatus.FAILED
        _finish(model, pk, status, error=str(exc), message="Failed.")
    except Exception as exc:  # the row must end, whatever the body did
        logger.exception("%s %s failed", model.job_label(), pk)
        status = JobStatus.FAILED
        _finish(model, pk, status, error=f"Unexpected error: {type(exc).__name__}: {exc}"[:5000], message="Failed.")
    else:
        status = JobStatus.SUCCEEDED
        _finish(model, pk, status, progress=1.0)
    finally:
        heartbeat.stop()
    return status


def _current_rq_job_id() -> str | None:
    try:
        from rq import get_current_job

        current = get_current_job()
    except Exception:
        return None
    return current.id if current else None


def job_models() -> list[type[Job]]:
    return [m for m in apps.get_models() if issubclass(m, Job)]


# Extra clean-up other apps add (labeling removes containers a killed worker left behind).
reaper_hooks: list[Callable[[], int]] = []


def reap_stale_jobs(*, now=None) -> dict[str, int]:
    """End rows whose worker died, stop jobs that ignore a cancel, fail rows Redis lost.

    Resumable jobs (training) are handed back to their queue instead of failed.
    """
    now = now or timezone.now()
    counts = {"failed": 0, "requeued": 0, "force_cancelled": 0, "lost": 0}
    stale_cutoff = now - timedelta(seconds=settings.JOB_STALE_AFTER)
    for model in job_models():
        for job in model.objects.stale(now=now):
            since = job.heartbeat_at or job.started_at
            if job.cancel_requested:
                updated = model.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(
                    status=JobStatus.CANCELLED, finished_at=now, message="Cancelled (the worker had stopped)."
                )
                counts["force_cancelled"] += updated
            elif job.can_resume():
                updated = model.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(
                    status=JobStatus.QUEUED, message="The worker stopped; resuming from the last checkpoint."
                )
                if updated:
                    job.refresh_from_db()
                    try:
                        enqueue_job(job, created=False)
                    except QueueUnavailable:
                        pass
                    counts["requeued"] += 1
            else:
                updated = model.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(
                    status=JobStatus.FAILED,
                    finished_at=now,
                    message="Failed.",
                    error="The worker running this job stopped responding "
                    f"(last heartbeat {since:%Y-%m-%d %H:%M:%S} UTC).",
                )
                counts["failed"] += updated
        # Jobs that ignore a cancel request for too long are stopped through RQ.
        grace_cutoff = now - timedelta(seconds=settings.JOB_CANCEL_GRACE)
        for job in model.objects.filter(
            status=JobStatus.RUNNING, cancel_requested=True, cancel_requested_at__lt=grace_cutoff
        ):
            _stop_rq_job(job.rq_job_id)
            counts["force_cancelled"] += model.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(
                status=JobStatus.CANCELLED, finished_at=now, message="Cancelled (stopped by the queue)."
            )
        # Queued rows whose RQ job vanished (Redis flushed or restarted without persistence).
        for job in model.objects.filter(status=JobStatus.QUEUED, created_at__lt=stale_cutoff).exclude(rq_job_id=""):
            if not _rq_job_exists(job.rq_job_id):
                counts["lost"] += model.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
                    status=JobStatus.FAILED,
                    finished_at=now,
                    message="Failed.",
                    error="The queue lost this job (Redis restarted?). Start it again.",
                )
    for hook in reaper_hooks:
        try:
            hook()
        except Exception:  # clean-up must never stop the reaper
            logger.warning("reaper hook %s failed", getattr(hook, "__name__", hook), exc_info=True)
    return counts


def _rq_job_exists(rq_job_id: str) -> bool:
    try:
        from rq.job import Job as RQJob

        return RQJob.exists(rq_job_id, connection=get_redis())
    except Exception:
        return True  # cannot tell: never fail a row on a Redis hiccup


def _stop_rq_job(rq_job_id: str) -> None:
    if not rq_job_id:
        return
    try:
        from rq.command import send_stop_job_command

        send_stop_job_command(get_redis(), rq_job_id)
    except Exception:
        logger.debug("could not stop rq job %s", rq_job_id, exc_info=True)
