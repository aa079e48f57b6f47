"""RQ entry point for generation (queue `generate`, run by imagineer.worker.WarmWorker, which does not fork).

`run_generation(job_id)` is a dispatch task: it starts the fairest queued row (see selectors), which is often
not `job_id` itself. The pipeline stays loaded in the worker process between jobs (training.ml.pipelines'
process-wide cache, keyed by base model); LoRAs are switched on it as adapters.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from django.db import IntegrityError

from gallery.imaging import ImageRejected
from gallery.models import ImageSource
from gallery.services import image_ingest
from imagineer import fairqueue
from imagineer.jobs import JobCancelled, JobContext, JobError, run_job

from ..ml.errors import GenerationCancelled, MLError
from ..models import GenerationJob, GenerationOutput
from . import selectors, services

logger = logging.getLogger(__name__)

# Progress writes and cancel checks cost a query each; a few per second is live enough for a page polling
# every two seconds and keeps a fast GPU from spending its steps waiting on the database.
PROGRESS_INTERVAL = 0.25
_LOAD_SHARE, _DENOISE_SHARE = 0.05, 0.85

# sha256 of a multi-gigabyte checkpoint takes seconds: remember it per file version.
_HASHES: dict[tuple[str, int, int], str] = {}


def run_generation(job_id: int) -> str | None:
    """Start the fairest queued generation (one per task); returns its final status, or None if none waited."""
    task_id = fairqueue.current_task_id(GenerationJob, job_id)  # outside a worker: act as this row's task
    job = services.generation_claim_next(task_id=task_id)
    if job is None:
        logger.info("generation task for %s found nothing queued", job_id)
        return None
    # The claim above already marked the row running for this task; run_job takes it over as this task's.
    return run_job(GenerationJob, job.pk, generate_body, task_id=task_id)


def run_generation_inline(job_id: int) -> str | None:
    """Run exactly this row in this process (manage.py generate --inline, tests)."""
    return run_job(GenerationJob, job_id, generate_body)


def _cached_hash(path: Path, func) -> str:
    try:
        stat = path.stat()
    except OSError:
        return ""
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = func(path)
    return _HASHES[key]


class _Progress:
    """Throttled progress writes and cancel checks for the denoising loop."""

    def __init__(self, ctx: JobContext, count: int):
        self.ctx = ctx
        self.count = count
        self.last_write = 0.0
        self.last_check = 0.0
        self.stop = False

    def on_step(self, step: int, total: int) -> None:
        now = time.monotonic()
        if step < total and now - self.last_write < PROGRESS_INTERVAL:
            return
        self.last_write = now
        self.ctx.update(step=step, total_steps=total, progress=_LOAD_SHARE + _DENOISE_SHARE * step / max(1, total),
                        message=f"Step {step} of {total}" + (f" ({self.count} images)" if self.count > 1 else ""),
                        check_cancel=False)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self.stop and now - self.last_check >= PROGRESS_INTERVAL:
            self.last_check = now
            self.stop = self.ctx.cancel_requested()
        return self.stop


def generate_body(ctx: JobContext) -> None:
    # The ML library imports torch/diffusers inside its functions; only the worker gets here.
    from ..ml.a1111 import a1111_parameters, lora_hash, model_hash, png_bytes_with_parameters
    from ..ml.generate import generate
    from ..ml.pipelines import LoraSpec, apply_loras, pipeline_cache

    job: GenerationJob = ctx.job
    base = job.base_model
    entries = list(selectors.lora_entries(job))
    timings: dict[str, float] = {}
    if job.started_at:
        timings["queue_wait"] = round((job.started_at - job.created_at).total_seconds(), 3)
    ctx.update(progress=0.0, step=0, total_steps=job.steps, timings=timings, message=f"Loading {base.name}…")

    started = time.perf_counter()
    cache = pipeline_cache()
    warm = base.cache_key in cache
    try:
        pipe = cache.get(base.source, kind=base.kind, source_type=base.source_type, key=base.cache_key)
        specs = [LoraSpec(entry.lora.name, entry.lora.diffusers_file, entry.weight) for entry in entries]
        apply_loras(pipe, specs)
    except (MLError, ValueError, OSError) as exc:
        raise JobError(f"Could not load the model: {exc}") from exc
    timings["load"] = round(time.perf_counter() - started, 3)
    ctx.update(progress=_LOAD_SHARE, timings=timings, counters={"model_was_warm": warm},
               message="Generating…", check_cancel=True)

    progress = _Progress(ctx, job.count)
    started = time.perf_counter()
    try:
        images = generate(pipe, prompt=job.prompt, negative_prompt=job.negative_prompt, scheduler=job.scheduler,
                          steps=job.steps, guidance_scale=job.guidance_scale, seed=job.seed, width=job.width,
                          height=job.height, count=job.count, on_step=progress.on_step,
                          should_stop=progress.should_stop)
    except GenerationCancelled as exc:
        ctx.update(step=exc.step, timings={**timings, "denoise": round(time.perf_counter() - started, 3)},
                   check_cancel=False)
        raise JobCancelled() from exc
    except ValueError as exc:
        raise JobError(str(exc)) from exc
    timings["denoise"] = round(time.perf_counter() - started, 3)
    ctx.update(progress=_LOAD_SHARE + _DENOISE_SHARE, timings=timings, message="Saving…", check_cancel=False)

    started = time.perf_counter()
    loras = [(entry.lora.name, entry.weight) for entry in entries]
    lora_hashes = {entry.lora.name: _cached_hash(Path(entry.lora.diffusers_file), lora_hash) for entry in entries}
    base_hash = _cached_hash(Path(base.source), model_hash) if base.source_type == "single_file" else ""
    image_ids: list[int] = []
    reused = 0
    for index, picture in enumerate(images):
        seed = job.seed + index
        text = a1111_parameters(job.prompt, job.negative_prompt, job.steps, job.scheduler, job.guidance_scale, seed,
                                job.width, job.height, model_name=base.name, model_hash=base_hash, loras=loras,
                                lora_hashes={k: v for k, v in lora_hashes.items() if v})
        data = png_bytes_with_parameters(picture, text)
        try:
            result = image_ingest(
                owner=job.owner, data=data, filename=f"generation-{job.pk}-{index}.png", source=ImageSource.GENERATED,
                title=job.prompt[:100], is_public=False, make_derivatives_inline=True,
                source_detail={"generation_job": job.pk, "index": index, "seed": seed, "base_model": base.name,
                               "loras": [{"name": n, "weight": w} for n, w in loras]},
            )
        except ImageRejected as exc:
            raise JobError(f"Image {index + 1} could not be stored: {exc}") from exc
        image = result.image
        if result.created or not GenerationOutput.objects.filter(image=image).exists():
            try:
                GenerationOutput.objects.create(job=job, image=image, index=index, seed=seed)
            except IntegrityError:  # another job recorded the same image a moment ago; it keeps the lineage
                reused += 1
        else:
            reused += 1  # the same seed and settings made these exact bytes before: the gallery returns that image
        image_ids.append(image.pk)
        ctx.update(progress=_LOAD_SHARE + _DENOISE_SHARE + 0.1 * (index + 1) / len(images),
                   counters={"image_ids": image_ids, "reused": reused}, check_cancel=False)
    timings["save"] = round(time.perf_counter() - started, 3)
    timings["total"] = round(timings["load"] + timings["denoise"] + timings["save"], 3)
    made = len(image_ids) - reused
    message = f"Made {made} image{'s' if made != 1 else ''}"
    if reused:
        message += f"; {reused} identical to images you already had (same seed and settings)"
    ctx.update(timings=timings, message=message + ".", check_cancel=False)

