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
from typing import Any, NoReturn, TypeVar

from django.apps import apps
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import DateTimeField, F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from .models import Job, JobStatus, stale_condition

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


class JobLost(Exception):
    """The row is no longer this run's: the reaper ended it or handed it to another worker, or it was deleted.

    Raised inside a job body by `ctx.update` and `ctx.check_cancel`; the run stops without writing to the row.
    """


def get_redis():
    import django_rq

    return django_rq.get_connection(queue_name("default"))


def ensure_queue_available() -> None:
    """Fail fast, before any row is written, when Redis is down."""
    import redis

    try:
        get_redis().ping()
    except (redis.RedisError, OSError) as exc:
        raise QueueUnavailable(type(exc).__name__) from exc


def queue_name(name: str) -> str:
    """The Redis name of one of settings.JOB_QUEUES (IMAGINEER_REDIS_PREFIX + name)."""
    if name not in settings.JOB_QUEUES:
        raise ValueError(f"unknown queue {name!r}; the queues are {', '.join(settings.JOB_QUEUES)}")
    return settings.REDIS_PREFIX + name


def get_queue(name: str):
    """The RQ queue for one of settings.JOB_QUEUES ("train", not its prefixed Redis name)."""
    import django_rq

    return django_rq.get_queue(queue_name(name))



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
            get_queue(model.queue_name).enqueue(
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


class Heartbeat(threading.Thread):
    """Touches heartbeat_at while the job body runs, even inside one long step.

    If the worker process dies, the thread dies with it and the row goes stale.
    """

    def __init__(self, ctx: JobContext):
        super().__init__(daemon=True, name=f"heartbeat-{ctx.model.job_label()}-{ctx.job.pk}")
        self.ctx = ctx
        self._stop_event = threading.Event()

    def run(self) -> None:
        ctx = self.ctx
        try:
            while not self._stop_event.wait(settings.JOB_HEARTBEAT_SECONDS):
                try:
                    if not ctx.own_row().update(heartbeat_at=timezone.now()):
                        # Another worker claimed the row (or it ended): stop keeping it alive; the body
                        # learns at its next update or cancel check.
                        ctx.lost.set()
                        return
                except Exception:
                    logger.warning("heartbeat for %s %s failed", ctx.model.job_label(), ctx.job.pk, exc_info=True)
        finally:
            connection.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


class JobContext:
    """What a job body uses to report progress and notice cancellation.

    `attempt` is the claim this run holds (the row's `attempts` after run_job claimed it): writes go only to
    the row while it is still running under that claim, so a run the reaper gave away cannot overwrite the
    run that took over; it gets JobLost instead. Without `attempt` the writes are not fenced.
    """

    def __init__(self, job: Job, *, attempt: int | None = None):
        self.job = job
        self.model = type(job)
        self.attempt = attempt
        self.lost = threading.Event()

    def own_row(self):
        """The job's row as a queryset, empty once this run no longer holds it."""
        rows = self.model.objects.filter(pk=self.job.pk)
        if self.attempt is not None:
            rows = rows.filter(status=JobStatus.RUNNING, attempts=self.attempt)
        return rows

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
        if self.lost.is_set() or not self.own_row().update(**values):
            self._lose()
        if check_cancel:
            self.check_cancel()

    def cancel_requested(self) -> bool:
        """Whether the body should stop: the user asked to cancel, or this run lost its row."""
        if self.lost.is_set():
            return True
        requested = self.own_row().values_list("cancel_requested", flat=True).first()
        if requested is None:
            self.lost.set()
            return True
        return requested

    def check_cancel(self) -> None:
        if self.cancel_requested():
            if self.lost.is_set():
                self._lose()
            raise JobCancelled()

    def _lose(self) -> NoReturn:
        self.lost.set()
        raise JobLost(f"{self.model.job_label()} {self.job.pk} is no longer this run's (attempt {self.attempt})")


def finish_job(ctx: JobContext, status: str, **values: Any) -> bool:
    now = timezone.now()
    return bool(ctx.own_row().filter(status=JobStatus.RUNNING).update(
        status=status, finished_at=now, heartbeat_at=now, **values
    ))


def claim_job(model: type[J], pk: int, task_id: str | None) -> J | str | None:
    """Take the row for this run in one conditional UPDATE; the row, JobStatus.CANCELLED, or None.

    Claimable: a queued row, a running row whose heartbeat went stale (its worker died), and a running row
    the caller already marked with its own `task_id` (generation's fair scheduler claims before run_job).
    A running row with a fresh heartbeat is never taken: after a database outage the reaper may have
    handed a live run back to the queue, and the worker that still runs it must not get a twin. The
    condition is on the row's own columns, so PostgreSQL re-checks it on the row it locks and SQLite
    runs the UPDATE under its write lock: of two workers racing for one row, exactly one claims it.
    """
    now = timezone.now()
    claimable = Q(status=JobStatus.QUEUED) | stale_condition(now=now)
    if task_id:
        claimable |= Q(status=JobStatus.RUNNING, rq_job_id=task_id)
    rows = model.objects.filter(claimable, pk=pk)
    with transaction.atomic():
        # A cancel that came before any worker started it (or after its worker died): end it, run nothing.
        if rows.filter(cancel_requested=True).update(status=JobStatus.CANCELLED, finished_at=now,
                                                       message="Cancelled."):
            return JobStatus.CANCELLED
        values: dict[str, Any] = {"rq_job_id": task_id} if task_id else {}
        claimed = rows.update(
            status=JobStatus.RUNNING,
            started_at=Coalesce(F("started_at"), Value(now, output_field=DateTimeField())),
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            error="",
            **values,
        )
        # Read inside the transaction: the UPDATE's row lock keeps `attempts` ours until commit.
        return model.objects.get(pk=pk) if claimed else None


def run_job(model: type[J], pk: int, body: Callable[[JobContext], Any], *, task_id: str | None = None) -> str | None:
    """Run one job row: claim it, call `body(ctx)`, record how it ended.

    `task_id`: the RQ job this run acts for (default: the current RQ job); the row records it, and a
    running row that already carries it counts as claimed by this caller.
    Returns the final status, or None when the row was gone, finished, running elsewhere, or taken
    from this run while it ran (JobLost).
    """
    close_old_connections()
    claim = claim_job(model, pk, task_id or _current_rq_job_id())
    if claim is None:
        status_now = model.objects.filter(pk=pk).values_list("status", flat=True).first()
        if status_now is None:
            logger.warning("%s %s no longer exists; skipping", model.job_label(), pk)
        elif status_now == JobStatus.RUNNING:
            logger.warning("%s %s is running on another worker (fresh heartbeat); not starting it twice",
                           model.job_label(), pk)
        return None
    if isinstance(claim, str):
        return claim
    job = claim
    ctx = JobContext(job, attempt=job.attempts)
    heartbeat = Heartbeat(ctx)
    heartbeat.start()
    status: str
    try:
        body(ctx)
    except JobLost:
        logger.warning("%s %s was taken over or ended elsewhere while attempt %s ran; stopped it",
                       model.job_label(), pk, ctx.attempt)
        return None
    except JobCancelled:
        status = JobStatus.CANCELLED
        ended = finish_job(ctx, status, message="Cancelled.")
    except JobError as exc:
        status = JobStatus.FAILED
        ended = finish_job(ctx, status, error=str(exc), message="Failed.")
    except Exception as exc:  # the row must end, whatever the body did
        logger.exception("%s %s failed", model.job_label(), pk)
        status = JobStatus.FAILED
        ended = finish_job(ctx, status, error=f"Unexpected error: {type(exc).__name__}: {exc}"[:5000],
                        message="Failed.")
    else:
        status = JobStatus.SUCCEEDED
        ended = finish_job(ctx, status, progress=1.0)
    finally:
        heartbeat.stop()
    return status if ended else None


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
