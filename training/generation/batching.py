"""Batching across users in the generate worker.

When a worker starts the fairest queued job, the jobs right behind it in the fair order that are compatible
(same base model, LoRA set and weights, size, steps, scheduler and CFG; text to image without hires fix) start
with it, up to GENERATE_BATCH_MAX_IMAGES images, and run in one denoising pass (training.ml.batching). Only a
run of consecutive compatible rows is taken, so rows still start in the fair order; a batch just starts several
of them at once. Each row keeps its own life cycle (claim, heartbeat, progress, cancel, end, as run_job gives
the lead), its own seeds, and gets the images it would get alone. Cancelling one row drops its images and
ends it; the others go on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from imagineer import fairqueue
from imagineer.jobs import JobCancelled, JobContext, JobError, JobLost, run_job
from imagineer.models import JobStatus

from ..ml.modes import hires_enabled
from ..models import GenerationJob
from . import selectors, services

logger = logging.getLogger(__name__)


def max_batch_images() -> int:
    return max(1, int(getattr(settings, "GENERATE_BATCH_MAX_IMAGES", 8)))


def batch_key(job: GenerationJob) -> tuple | None:
    """Jobs with equal keys can share a denoising pass; None: this job runs alone."""
    if job.mode != "txt2img" or hires_enabled(job.hires_scale):
        return None
    loras = tuple((entry.lora_id, float(entry.weight)) for entry in selectors.lora_entries(job))
    return (job.base_model_id, loras, job.width, job.height, job.steps, job.scheduler, float(job.guidance_scale))


def claim_followers(lead: GenerationJob, *, task_id: str) -> list[GenerationJob]:
    """Mark the compatible rows right behind `lead` in the fair order running for the same task."""
    key = batch_key(lead)
    budget = max_batch_images() - lead.count
    if key is None or budget <= 0 or not task_id:
        return []
    followers: list[GenerationJob] = []
    for row in fairqueue.fair_order(GenerationJob):
        candidate = GenerationJob.objects.filter(pk=row.pk).first()
        if candidate is None or batch_key(candidate) != key or candidate.count > budget:
            break  # the first row that cannot join ends the batch: nobody jumps the fair order
        now = timezone.now()
        with transaction.atomic():
            claimed = GenerationJob.objects.filter(
                pk=row.pk, status=JobStatus.QUEUED, cancel_requested=False, rq_job_id=row.rq_job_id,
            ).update(status=JobStatus.RUNNING, heartbeat_at=now, rq_job_id=task_id, message="Starting in a batch…",
                     started_at=Coalesce(F("started_at"), Value(now, output_field=DateTimeField())))
        if not claimed:
            break  # taken or cancelled meanwhile: stop here rather than skip ahead
        candidate.refresh_from_db()
        followers.append(candidate)
        budget -= candidate.count
    return followers


@dataclass
class _Member:
    ctx: JobContext
    timings: dict
    heartbeat: object | None = None


def _start_follower(job: GenerationJob, task_id: str) -> _Member | None:
    """Claim a follower row for this run the way run_job does (it was marked running for this task)."""
    # imagineer.jobs' claim, heartbeat and finish are the ones run_job uses: a follower's row lives exactly
    # like a row run alone, in this thread (SQLite allows one writer; the batch writes from one thread).
    from imagineer.jobs import Heartbeat, claim_job

    claim = claim_job(GenerationJob, job.pk, task_id)
    if claim is None or isinstance(claim, str):
        return None  # gone, or cancelled before it started (then it is already ended)
    ctx = JobContext(claim, attempt=claim.attempts)
    heartbeat = Heartbeat(ctx)
    heartbeat.start()
    try:
        timings = services._start_timings(ctx, claim, check_cancel=False)
    except JobLost:
        heartbeat.stop()
        return None
    return _Member(ctx, timings, heartbeat)


def _end_follower(member: _Member, images: list | None, hashes: dict[str, str], error: str = "") -> None:
    from imagineer.jobs import finish_job

    ctx = member.ctx
    try:
        if error:
            finish_job(ctx, JobStatus.FAILED, error=error[:5000], message="Failed.")
        elif images is None:
            finish_job(ctx, JobStatus.CANCELLED, message="Cancelled.")
        else:
            try:
                services.store_job_images(ctx, ctx.job, images, member.timings, hashes)
            except JobLost:
                return
            except JobError as exc:
                finish_job(ctx, JobStatus.FAILED, error=str(exc), message="Failed.")
            except Exception as exc:  # this row must end, whatever storing did
                logger.exception("storing generation %s failed", ctx.job.pk)
                finish_job(ctx, JobStatus.FAILED, error=f"Unexpected error: {type(exc).__name__}: {exc}"[:5000],
                        message="Failed.")
            else:
                finish_job(ctx, JobStatus.SUCCEEDED, progress=1.0)
    finally:
        member.heartbeat.stop()


def _batch_body(followers: list[GenerationJob], task_id: str):
    """run_job's body for the lead: start the followers, one pass for all, end each follower, store the lead's."""

    def body(ctx: JobContext) -> None:
        from ..ml.batching import BatchItem, generate_batch

        lead: GenerationJob = ctx.job
        members = {lead.pk: _Member(ctx, services._start_timings(ctx, lead, check_cancel=False))}
        for job in followers:
            member = _start_follower(job, task_id)
            if member is not None:
                members[job.pk] = member
        order = list(members)
        results: list[list | None] = [None] * len(order)
        hashes: dict[str, str] = {}
        error = ""
        try:
            pipe, hashes = services.load_job_pipeline(ctx, lead, members[lead.pk].timings, check_cancel=False)
            progress = {pk: services._Progress(members[pk].ctx, members[pk].ctx.job.count) for pk in order}
            for pk in order:
                members[pk].ctx.update(progress=services._LOAD_SHARE, check_cancel=False, message="Generating…",
                                       counters={"batched_with": order})

            def stopper(pk):
                def should_stop() -> bool:
                    try:
                        return progress[pk].should_stop()
                    except JobLost:
                        return True
                return should_stop

            def on_step(step: int, total: int) -> None:
                for pk in order:
                    try:
                        progress[pk].on_step(step, total)
                    except JobLost:
                        pass

            items = [BatchItem(members[pk].ctx.job.prompt, members[pk].ctx.job.seed,
                               members[pk].ctx.job.negative_prompt, members[pk].ctx.job.count,
                               should_stop=stopper(pk)) for pk in order]
            started = time.perf_counter()
            results = generate_batch(pipe, items, scheduler=lead.scheduler, steps=lead.steps,
                                     guidance_scale=lead.guidance_scale, width=lead.width, height=lead.height,
                                     on_step=on_step, max_images=max(max_batch_images(), lead.count))
            denoise = round(time.perf_counter() - started, 3)
            for pk in order:
                members[pk].timings.setdefault("load", 0.0)
                members[pk].timings["denoise"] = denoise
        except JobError as exc:
            error = str(exc)
        except Exception as exc:  # every row of the batch ends, with the reason
            logger.exception("generation batch led by %s failed", lead.pk)
            error = f"Unexpected error: {type(exc).__name__}: {exc}"
        for pk, images in zip(order[1:], results[1:], strict=True):
            _end_follower(members[pk], images, hashes, error)
        if error:
            raise JobError(error)
        if results[0] is None:
            raise JobCancelled()
        services.store_job_images(ctx, lead, results[0], members[lead.pk].timings, hashes)

    return body


def run_batch(lead: GenerationJob, followers: list[GenerationJob], *, task_id: str) -> str | None:
    """Run the lead through run_job; its body runs the followers' rows in the same pass. The lead's status."""
    return run_job(GenerationJob, lead.pk, _batch_body(followers, task_id), task_id=task_id)
