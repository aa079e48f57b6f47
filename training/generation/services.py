"""Writes for generation: create (validate everything first, then queue), re-run, claim the fairest row, cancel.

Every way in (the form, the JSON API, the command) goes through `generation_create`, so the checks and their
messages are the same everywhere and nothing is written or queued when any of them fails.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from django.db import IntegrityError, transaction

from gallery.imaging import ImageRejected
from gallery.models import Image, ImageSource
from gallery.services import image_ingest
from imagineer import fairqueue
from imagineer.artifacts import cached_artifact
from imagineer.jobs import JobCancelled, JobContext, JobError, enqueue_job, ensure_queue_available, job_cancel
from imagineer.quotas import CostTooHigh, QuotaExceeded, generation_cost_check, quota_check

from ..basemodels import BaseModelUnavailable, local_source
from ..ml.errors import GenerationCancelled, MLError
from ..ml.generate import (
    MAX_SEED,
    SCHEDULERS,
    default_scheduler_for,
    generation_param_problems,
    scheduler_fits,
)
from ..ml.modes import hires_enabled, hires_size, validate_mode_params
from ..models import BaseModel, GenerationJob, GenerationLora, GenerationOutput, LoraModel
from . import selectors

DEFAULT_SCHEDULER = "euler_a"
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.0
MAX_LORAS = 8
LORA_WEIGHT_RANGE = (-4.0, 4.0)


class GenerationInputError(ValueError):
    """The request cannot be generated as given; the message says why. Nothing was created.

    `fields` maps form field names to their problem where the problem belongs to one field (shown beside it).
    """

    def __init__(self, message: str, fields: dict[str, str] | None = None):
        super().__init__(message)
        self.fields = dict(fields or {})


MAX_MASK_BYTES = 2 * 1024 * 1024


# The per-user limit (queued plus running, GENERATE_MAX_QUEUED_PER_USER or the user's override) is the shared
# one of imagineer.quotas; the old name stays for callers that catch it.
GenerationLimitReached = QuotaExceeded


@dataclass(frozen=True)
class LoraChoice:
    """A LoRA asked for by name (API, command) or as a row (form), with a weight or None for its default."""

    lora: str | LoraModel
    weight: float | None = None


def _resolve_base_model(base_model: BaseModel | str | None) -> BaseModel:
    if isinstance(base_model, BaseModel):
        return base_model
    if base_model:
        found = BaseModel.objects.filter(name=base_model).first()
        if found is None:
            names = ", ".join(BaseModel.objects.values_list("name", flat=True)[:20]) or "none registered"
            raise GenerationInputError(f"Unknown base model {base_model!r} (available: {names}).")
        return found
    found = BaseModel.default()
    if found is None:
        raise GenerationInputError("No base model is registered yet; an administrator has to add one first.")
    return found


def _resolve_loras(user, base: BaseModel, choices: Sequence[LoraChoice]) -> list[tuple[LoraModel, float]]:
    if len(choices) > MAX_LORAS:
        raise GenerationInputError(f"At most {MAX_LORAS} LoRAs can be combined in one generation.")
    resolved: list[tuple[LoraModel, float]] = []
    problems: list[str] = []
    usable = selectors.usable_loras(user)
    for choice in choices:
        lora = choice.lora
        if isinstance(lora, LoraModel):
            lora = usable.filter(pk=lora.pk).first() or lora.name
        if isinstance(lora, str):
            name = lora.strip()
            found = usable.filter(name=name).first()
            if found is None:
                # Another user's private LoRA reads exactly like a missing one: its existence is not revealed.
                problems.append(f"no LoRA named {name!r} that you may use")
                continue
            lora = found
        if lora.base_model.kind != base.kind:
            problems.append(
                f"LoRA {lora.name!r} was made for {lora.base_model.get_kind_display()} ({lora.base_model.name}) "
                f"and cannot be used with {base.name}, a {base.get_kind_display()} model"
            )
            continue
        weight = lora.default_weight if choice.weight is None else choice.weight
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            problems.append(f"the weight of LoRA {lora.name!r} is not a number")
            continue
        low, high = LORA_WEIGHT_RANGE
        if not (low <= weight <= high):
            problems.append(f"the weight of LoRA {lora.name!r} must be between {low:g} and {high:g} (got {weight:g})")
            continue
        if any(existing.pk == lora.pk for existing, _ in resolved):
            problems.append(f"LoRA {lora.name!r} is listed twice")
            continue
        resolved.append((lora, weight))
    if problems:
        raise GenerationInputError("Cannot use these LoRAs: " + "; ".join(problems) + ".")
    return resolved


DEFAULT_STRENGTH = 0.75  # A1111's img2img default
DEFAULT_HIRES_STRENGTH = 0.5


def _resolve_source(user, source_image: Image | int | None) -> Image | None:
    """The source image if the user may see it; another user's private image reads as missing."""
    if source_image is None or source_image == "":
        return None
    pk = source_image.pk if isinstance(source_image, Image) else source_image
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise GenerationInputError(f"{source_image!r} is not an image.", {"source_image": "not an image"}) from None
    # The image page's rule: a member of a shared album may start from its images (Image.is_accessible_to).
    found = Image.objects.accessible_to(user).filter(pk=pk).first()
    if found is None:
        message = f"there is no image #{pk} that you may use"
        raise GenerationInputError(f"Invalid generation settings: {message}.", {"source_image": message})
    return found


def _size_like(image: Image, native: int) -> tuple[int, int]:
    """The source's aspect ratio with its long side at the model's native size, in multiples of 8."""
    w, h = max(1, image.width or native), max(1, image.height or native)
    scale = native / max(w, h)
    return max(8, int(w * scale) // 8 * 8), max(8, int(h * scale) // 8 * 8)


def _check_mask(data: bytes) -> str:
    """A problem with the posted mask, or "" when it is a PNG with something to repaint."""
    import io

    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    if len(data) > MAX_MASK_BYTES:
        return f"the mask is larger than {MAX_MASK_BYTES // (1024 * 1024)} MB"
    try:
        with PILImage.open(io.BytesIO(data), formats=["PNG"]) as mask:
            if mask.width * mask.height > 4096 * 4096:
                return "the mask is too large"
            extrema = mask.convert("L").getextrema()
    except (UnidentifiedImageError, OSError, ValueError, PILImage.DecompressionBombError):
        return "the mask is not a readable PNG"
    if extrema[1] < 128:
        return "the mask is empty: paint the area to repaint"
    return ""


def mask_image(job: GenerationJob):
    """The job's mask as a PIL image, or None."""
    import io

    from PIL import Image as PILImage

    if not job.mask_png:
        return None
    with PILImage.open(io.BytesIO(bytes(job.mask_png)), formats=["PNG"]) as mask:
        return mask.convert("L")


def source_picture(job: GenerationJob):
    """The job's source image decoded from storage, or None."""
    import io

    from django.core.files.storage import default_storage
    from PIL import Image as PILImage

    if job.source_image is None:
        return None
    with default_storage.open(job.source_image.file.name, "rb") as handle:
        data = handle.read()
    with PILImage.open(io.BytesIO(data)) as picture:
        return picture.convert("RGB")


def random_seed(count: int = 1) -> int:
    return secrets.randbelow(MAX_SEED - max(0, count - 1) + 1)


def generation_create(
    *,
    user,
    prompt: str,
    negative_prompt: str = "",
    base_model: BaseModel | str | None = None,
    loras: Sequence[LoraChoice] = (),
    scheduler: str | None = None,
    steps: int | None = None,
    guidance_scale: float | None = None,
    seed: int | None = None,
    width: int | None = None,
    height: int | None = None,
    count: int = 1,
    mode: str = "txt2img",
    source_image: Image | int | None = None,
    mask_png: bytes | None = None,
    strength: float | None = None,
    hires_scale: float | None = None,
    hires_steps: int | None = None,
    hires_strength: float | None = None,
    enqueue: bool = True,
) -> GenerationJob:
    """Validate a generation request, then create its row and queue it; raise GenerationInputError (bad input,
    or more work than GENERATE_MAX_COST allows) or QuotaExceeded (too many queued or running) first if not.

    Empty settings take defaults (the base model's native size; a random seed, always recorded). `enqueue=False`
    makes a row for `run_generation_inline` that no worker picks up.
    """
    if user is None or not user.is_authenticated:
        raise GenerationInputError("Log in to generate images.")
    base = _resolve_base_model(base_model)
    chosen = _resolve_loras(user, base, list(loras))
    if not scheduler or (scheduler == DEFAULT_SCHEDULER and not scheduler_fits(base.kind, scheduler)):
        scheduler = default_scheduler_for(base.kind)  # the form's default sampler is the SD one
    if not scheduler_fits(base.kind, scheduler):
        problem = (f"The sampler {scheduler!r} does not fit {base.name} ({base.get_kind_display()}): "
                   f"choose {default_scheduler_for(base.kind)}.")
        raise GenerationInputError(problem, {"scheduler": problem})
    steps = DEFAULT_STEPS if steps is None else steps
    guidance_scale = DEFAULT_GUIDANCE if guidance_scale is None else guidance_scale
    mode = mode or "txt2img"
    source = _resolve_source(user, source_image) if mode in ("img2img", "inpaint") else None
    mask_png = mask_png or b""
    strength = (DEFAULT_STRENGTH if strength is None else strength) if mode != "txt2img" else None
    hires_scale = 1.0 if hires_scale is None else hires_scale
    hires_steps = 0 if hires_steps is None else hires_steps
    hires_strength = DEFAULT_HIRES_STRENGTH if hires_strength is None else hires_strength
    problems = validate_mode_params(mode=mode, strength=strength, has_source=source is not None,
                                    has_mask=bool(mask_png), hires_scale=hires_scale, hires_steps=hires_steps,
                                    hires_strength=hires_strength)
    if mode == "inpaint" and mask_png and "mask" not in problems:
        mask_problem = _check_mask(mask_png)
        if mask_problem:
            problems["mask"] = mask_problem
    if problems:
        raise GenerationInputError("Invalid generation settings: " + "; ".join(problems.values()) + ".", problems)
    if source is not None and not (width or height):
        width, height = _size_like(source, base.native_size)
    # Empty: the model's native size (64 px for the tiny model, 512 for SD1.5, 1024 for SDXL).
    width = width or base.native_size
    height = height or base.native_size
    count = 1 if count is None else count
    seed_was_random = seed is None
    seed = random_seed(count) if seed is None else seed
    prompt = (prompt or "").strip()
    negative_prompt = (negative_prompt or "").strip()
    param_problems = generation_param_problems(
        prompt=prompt, negative_prompt=negative_prompt, scheduler=scheduler, steps=steps,
        guidance_scale=guidance_scale, seed=seed, width=width, height=height, count=count)
    if param_problems:
        raise GenerationInputError("Invalid generation settings: " + "; ".join(param_problems.values()),
                                   param_problems)
    if seed + count - 1 > MAX_SEED:
        raise GenerationInputError(
            f"Image n of a batch uses seed + n, so the seed must be at most {MAX_SEED - count + 1} for {count} images."
        )
    try:
        generation_cost_check(width=width, height=height, count=count, steps=steps)
        if hires_enabled(hires_scale):  # the second pass is the larger one
            generation_cost_check(**dict(zip(("width", "height"), hires_size(width, height, hires_scale),
                                             strict=True)), count=count, steps=hires_steps or steps)
    except CostTooHigh as exc:
        raise GenerationInputError(str(exc), {exc.field: str(exc)} if getattr(exc, "field", None) else None) from exc
    if enqueue:
        ensure_queue_available()
    with transaction.atomic():
        if enqueue:
            quota_check(user=user, model=GenerationJob)  # raises QuotaExceeded
        job = GenerationJob.objects.create(
            owner=user, prompt=prompt, negative_prompt=negative_prompt, base_model=base, scheduler=scheduler,
            steps=steps, guidance_scale=guidance_scale, seed=seed, width=width, height=height, count=count,
            total_steps=steps, counters={"seed_was_random": seed_was_random}, mode=mode, source_image=source,
            mask_png=mask_png if mode == "inpaint" else b"", strength=strength, hires_scale=hires_scale,
            hires_steps=hires_steps, hires_strength=hires_strength,
            message="Waiting for a worker…" if enqueue else "Waiting to run here…",
        )
        GenerationLora.objects.bulk_create(
            [GenerationLora(job=job, lora=lora, weight=weight, position=n) for n, (lora, weight) in enumerate(chosen)]
        )
        if enqueue:
            enqueue_job(job)
    return job


def generation_settings(job: GenerationJob, *, seed: int | None = None, count: int | None = None) -> dict:
    """The keyword arguments of `generation_create` that repeat `job` (optionally with another seed/count)."""
    return {
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "base_model": job.base_model,
        "loras": [LoraChoice(entry.lora, entry.weight) for entry in selectors.lora_entries(job)],
        "scheduler": job.scheduler,
        "steps": job.steps,
        "guidance_scale": job.guidance_scale,
        "seed": job.seed if seed is None else seed,
        "width": job.width,
        "height": job.height,
        "count": job.count if count is None else count,
        "mode": job.mode,
        "source_image": job.source_image,
        "mask_png": bytes(job.mask_png or b""),
        "strength": job.strength,
        "hires_scale": job.hires_scale,
        "hires_steps": job.hires_steps,
        "hires_strength": job.hires_strength,
    }


def generation_rerun(*, user, job: GenerationJob, enqueue: bool = True) -> GenerationJob:
    """Generate again with exactly the job's settings and seed: on the same machine, the same images.

    The whole batch is repeated because a batch of N is reproducible as a batch; the gallery then hands back
    the images that already exist instead of storing copies.
    """
    return generation_create(user=user, enqueue=enqueue, **generation_settings(job))


def generation_cancel(*, job: GenerationJob) -> bool:
    return job_cancel(job)


def generation_claim_next(*, task_id: str) -> GenerationJob | None:
    """Atomically mark the fairest queued row running for the RQ task `task_id`, or return None if none waits.

    See imagineer.fairqueue: the row this task was queued for takes over the claimed row's task.
    """
    return fairqueue.claim_next(GenerationJob, task_id=task_id)


def scheduler_choices() -> list[tuple[str, str]]:
    return [(name, spec.a1111) for name, spec in SCHEDULERS.items()]


# --- running a job (the worker) -----------------------------------------------------------------------

# Progress writes and cancel checks cost a query each; a few per second is live enough for a page polling
# every two seconds and keeps a fast GPU from spending its steps waiting on the database.
PROGRESS_INTERVAL = 0.25
PREVIEW_EVERY = 3  # steps between live previews (each is a tiny matrix product and one row update)
_LOAD_SHARE, _DENOISE_SHARE = 0.05, 0.85

# sha256 of a multi-gigabyte checkpoint takes seconds: remember it per file version (and per loaded base model).
_HASHES: dict[tuple[str, int, int], str] = {}
_BASE_HASHES: dict[str, str] = {}


def _cached_hash(path: Path, func) -> str:
    try:
        stat = path.stat()
    except OSError:
        return ""
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = func(path)
    return _HASHES[key]


# A1111 hash of each LoRA's kohya file, by the file's sha256: computed once per worker process.
_KOHYA_HASHES: dict[str, str] = {}


def _a1111_lora_hash(files: contextlib.ExitStack, lora, diffusers_path: Path, func) -> str:
    """The hash A1111 and Civitai users look a LoRA up by: that of the kohya file they download, not of the
    diffusers file the worker loads (a different file, so a different hash)."""
    if not lora.kohya_file:
        return _cached_hash(diffusers_path, func)
    key = lora.kohya_sha256 or lora.kohya_file
    if key not in _KOHYA_HASHES:
        path = files.enter_context(cached_artifact(lora.kohya_file, lora.kohya_sha256))
        _KOHYA_HASHES[key] = _cached_hash(path, func)
    return _KOHYA_HASHES[key]


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

    def on_preview(self, step: int, picture) -> None:
        """Store a small PNG of the denoising so far on the row; the page shows it through its polling."""
        import io

        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        self.ctx.own_row().update(preview_png=buffer.getvalue(), preview_step=step)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self.stop and now - self.last_check >= PROGRESS_INTERVAL:
            self.last_check = now
            self.stop = self.ctx.cancel_requested()
        return self.stop


def mode_inputs(job: GenerationJob) -> dict:
    """The keyword arguments of ml.generate.generate for the job's mode (source and mask decoded)."""
    inputs: dict = {"mode": job.mode, "hires_scale": job.hires_scale, "hires_steps": job.hires_steps,
                    "hires_strength": job.hires_strength}
    if job.mode in ("img2img", "inpaint"):
        inputs.update(init_image=source_picture(job), strength=job.strength, mask_image=mask_image(job))
    return inputs


def a1111_mode_fields(job: GenerationJob) -> dict:
    """The fields A1111 writes for img2img/inpainting and hires fix, in its names."""
    import hashlib

    fields: dict = {}
    if job.mode in ("img2img", "inpaint") and job.strength is not None:
        fields["Denoising strength"] = f"{job.strength:g}"
    if job.mode in ("img2img", "inpaint") and job.source_image is not None and job.source_image.sha256:
        # Which picture it started from, by content (an id means nothing on another server): sha256, 10 digits.
        fields["Init image hash"] = job.source_image.sha256[:10]
    if job.mode == "inpaint":
        fields["Mask blur"] = 0
        if job.mask_png:
            fields["Mask hash"] = hashlib.sha256(bytes(job.mask_png)).hexdigest()[:10]
    if hires_enabled(job.hires_scale):
        fields["Denoising strength"] = f"{job.hires_strength:g}"
        fields["Hires upscale"] = f"{job.hires_scale:g}"
        if job.hires_steps:
            fields["Hires steps"] = job.hires_steps
        from ..ml.modes import HIRES_UPSCALER

        fields["Hires upscaler"] = HIRES_UPSCALER
    return fields


def mode_lineage(job: GenerationJob) -> dict:
    """The mode's inputs as they go into a generated image's source_detail."""
    if job.mode == "txt2img" and not hires_enabled(job.hires_scale):
        return {}
    detail: dict = {"mode": job.mode}
    if job.mode != "txt2img":
        detail.update(source_image=job.source_image_id, strength=job.strength, masked=bool(job.mask_png))
    if hires_enabled(job.hires_scale):
        detail["hires"] = {"scale": job.hires_scale, "steps": job.hires_steps, "strength": job.hires_strength}
    return detail


def generation_run(ctx: JobContext) -> None:
    """The body of a generation job (run_job calls it with the claimed row): load, denoise, store the images."""
    # The ML library imports torch/diffusers inside its functions; only the worker gets here.
    from ..ml.generate import generate

    job: GenerationJob = ctx.job
    timings = _start_timings(ctx, job)
    pipe, lora_hashes = load_job_pipeline(ctx, job, timings)
    try:
        inputs = mode_inputs(job)
    except (OSError, ValueError) as exc:
        raise JobError(f"Could not read the source image or mask: {exc}") from exc
    progress = _Progress(ctx, job.count)
    started = time.perf_counter()
    try:
        images = generate(pipe, prompt=job.prompt, negative_prompt=job.negative_prompt, scheduler=job.scheduler,
                          steps=job.steps, guidance_scale=job.guidance_scale, seed=job.seed, width=job.width,
                          height=job.height, count=job.count, on_step=progress.on_step,
                          should_stop=progress.should_stop, on_preview=progress.on_preview,
                          preview_every=PREVIEW_EVERY, **inputs)
    except GenerationCancelled as exc:
        ctx.update(step=exc.step, timings={**timings, "denoise": round(time.perf_counter() - started, 3)},
                   check_cancel=False)
        raise JobCancelled() from exc
    except ValueError as exc:
        raise JobError(str(exc)) from exc
    timings["denoise"] = round(time.perf_counter() - started, 3)
    store_job_images(ctx, job, images, timings, lora_hashes)


def _start_timings(ctx: JobContext, job: GenerationJob, *, check_cancel: bool = True) -> dict[str, float]:
    timings: dict[str, float] = {}
    if job.started_at:
        timings["queue_wait"] = round((job.started_at - job.created_at).total_seconds(), 3)
    ctx.update(progress=0.0, step=0, total_steps=job.steps, timings=timings,
               message=f"Loading {job.base_model.name}…", check_cancel=check_cancel)
    return timings


def load_job_pipeline(ctx: JobContext, job: GenerationJob, timings: dict,
                      *, check_cancel: bool = True) -> tuple[object, dict[str, str]]:
    """The warm pipeline for the job's base model with its LoRAs applied; {LoRA name: hash}. Records `load`."""
    from ..ml.a1111 import lora_hash, model_hash
    from ..ml.pipelines import LoraSpec, apply_loras, pipeline_cache

    base = job.base_model
    entries = list(selectors.lora_entries(job))
    started = time.perf_counter()
    cache = pipeline_cache()
    warm = base.cache_key in cache
    try:
        # Base model and LoRAs come from this machine's cache of the storage (downloaded on first use, held
        # while they load); a warm pipeline needs no files at all.
        with contextlib.ExitStack() as files:
            if warm:
                pipe = cache.get(base.source, kind=base.kind, source_type=base.source_type, key=base.cache_key)
            else:
                source, source_type = files.enter_context(local_source(base))
                pipe = cache.get(source, kind=base.kind, source_type=source_type, key=base.cache_key)
                if source_type == "single_file":
                    _BASE_HASHES[base.cache_key] = model_hash(Path(source))
            specs, lora_hashes = [], {}
            for entry in entries:
                lora = entry.lora
                path = files.enter_context(cached_artifact(lora.diffusers_file, lora.diffusers_sha256))
                specs.append(LoraSpec(lora.name, str(path), entry.weight))
                lora_hashes[lora.name] = _a1111_lora_hash(files, lora, path, lora_hash)
            apply_loras(pipe, specs)
    except (MLError, ValueError, OSError, BaseModelUnavailable) as exc:
        raise JobError(f"Could not load the model: {exc}") from exc
    timings["load"] = round(time.perf_counter() - started, 3)
    ctx.update(progress=_LOAD_SHARE, timings=timings, counters={"model_was_warm": warm},
               message="Generating…", check_cancel=check_cancel)
    return pipe, lora_hashes


def store_job_images(ctx: JobContext, job: GenerationJob, images: list, timings: dict,
                     lora_hashes: dict[str, str]) -> None:
    """PNG with A1111 parameters, gallery ingest and lineage for each image; the row's final message."""
    from ..ml.a1111 import a1111_parameters, png_bytes_with_parameters

    base = job.base_model
    entries = list(selectors.lora_entries(job))
    ctx.update(progress=_LOAD_SHARE + _DENOISE_SHARE, timings=timings, message="Saving…", check_cancel=False)
    started = time.perf_counter()
    loras = [(entry.lora.name, entry.weight) for entry in entries]
    base_hash = _BASE_HASHES.get(base.cache_key, "")
    image_ids: list[int] = []
    reused = 0
    for index, picture in enumerate(images):
        seed = job.seed + index
        text = a1111_parameters(job.prompt, job.negative_prompt, job.steps, job.scheduler, job.guidance_scale, seed,
                                job.width, job.height, model_name=base.name, model_hash=base_hash, loras=loras,
                                lora_hashes={k: v for k, v in lora_hashes.items() if v}, extra=a1111_mode_fields(job))
        data = png_bytes_with_parameters(picture, text)
        try:
            result = image_ingest(
                owner=job.owner, data=data, filename=f"generation-{job.pk}-{index}.png", source=ImageSource.GENERATED,
                title=job.prompt[:100], is_public=False, make_derivatives_inline=True,
                source_detail={"generation_job": job.pk, "index": index, "seed": seed, "base_model": base.name,
                               "loras": [{"name": n, "weight": w} for n, w in loras], **mode_lineage(job)},
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
    timings["total"] = round(timings.get("load", 0.0) + timings.get("denoise", 0.0) + timings["save"], 3)
    made = len(image_ids) - reused
    message = f"Made {made} image{'s' if made != 1 else ''}"
    if reused:
        message += f"; {reused} identical to images you already had (same seed and settings)"
    # The preview has served its purpose once the images exist.
    ctx.update(timings=timings, message=message + ".", check_cancel=False, preview_png=b"")
