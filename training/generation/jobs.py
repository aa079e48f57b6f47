"""RQ entry point for generation (queue `generate`, run by imagineer.worker.WarmWorker, which does not fork).

`run_generation(job_id)` is a dispatch task: it starts the fairest queued row (see selectors), which is often
not `job_id` itself. The work itself is `services.generation_run`; the pipeline stays loaded in the worker
process between jobs (training.ml.pipelines' process-wide cache, keyed by base model).
"""

from __future__ import annotations

import logging

from imagineer import fairqueue
from imagineer.jobs import run_job

from ..models import GenerationJob
from . import batching, services

logger = logging.getLogger(__name__)


def run_generation(job_id: int) -> str | None:
    """Start the fairest queued generation (one per task); returns its final status, or None if none waited."""
    task_id = fairqueue.current_task_id(GenerationJob, job_id)  # outside a worker: act as this row's task
    job = services.generation_claim_next(task_id=task_id)
    if job is None:
        logger.info("generation task for %s found nothing queued", job_id)
        return None
    # Compatible rows right behind it in the fair order run in the same denoising pass (see batching).
    followers = batching.claim_followers(job, task_id=task_id)
    if followers:
        return batching.run_batch(job, followers, task_id=task_id)
    # The claim above already marked the row running for this task; run_job takes it over as this task's.
    return run_job(GenerationJob, job.pk, services.generation_run, task_id=task_id)


def run_generation_inline(job_id: int) -> str | None:
    """Run exactly this row in this process (manage.py generate --inline, tests)."""
    return run_job(GenerationJob, job_id, services.generation_run)
