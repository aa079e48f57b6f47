"""Reads for generation: the fair queue order, queue positions, the LoRAs a user may pick, a job's images.

Fair order (round robin over users, then oldest first) is imagineer.fairqueue's, shared with training runs.
"""

from __future__ import annotations

from django.db.models import Q

from gallery.models import Image
from imagineer import fairqueue
from imagineer.models import JobStatus

from ..models import BaseModel, GenerationJob, LoraModel


def dispatchable_jobs():
    """Queued rows a worker may start: not cancelled, and sent to the queue (inline runs have no RQ task)."""
    return fairqueue.dispatchable(GenerationJob)


def fair_order() -> list[GenerationJob]:
    """Every dispatchable row in the order the workers will start them (if nothing else is queued meanwhile)."""
    return fairqueue.fair_order(GenerationJob)


def claim_candidates(limit: int = 20) -> list[GenerationJob]:
    """The next row of each user, fairest first: what a worker tries to claim, in this order."""
    return fairqueue.claim_candidates(GenerationJob, limit)


def queue_positions() -> dict[int, int]:
    """{job id: position}, 1 being the next row a free worker starts."""
    return fairqueue.queue_positions(GenerationJob)


def queue_position(job: GenerationJob) -> int | None:
    return fairqueue.queue_position(job)


def user_jobs(user):
    return GenerationJob.objects.filter(owner=user).select_related("base_model")


def active_jobs_with_positions(user) -> list[GenerationJob]:
    """The user's queued and running jobs, each with `.position` (None while running)."""
    jobs = list(user_jobs(user).active().order_by("created_at", "pk"))
    positions = queue_positions() if any(j.status == JobStatus.QUEUED for j in jobs) else {}
    for job in jobs:
        job.position = positions.get(job.pk)
    return jobs


def usable_loras(user):
    """LoRAs the user may generate with: public ones, their own, and every one for staff."""
    qs = LoraModel.objects.select_related("base_model", "owner").order_by("friendly_name", "name")
    if user is None or not user.is_authenticated:
        return qs.filter(is_public=True)
    if user.is_staff:
        return qs
    return qs.filter(Q(is_public=True) | Q(owner=user))


def base_models():
    return BaseModel.objects.order_by("-is_default", "name")


def job_images(job: GenerationJob) -> list[Image]:
    """The job's images in order: the ones it made, and the ones it reproduced that an earlier job made first.

    The gallery keeps one row per owner and content, so a regenerate with the same seed and settings gives the
    existing image back; the job lists it in `counters["image_ids"]`.
    """
    ids = list(job.counters.get("image_ids") or [])
    if not ids:
        ids = list(job.outputs.order_by("index").values_list("image_id", flat=True))
    found = {image.pk: image for image in Image.objects.filter(pk__in=ids)}
    return [found[i] for i in ids if i in found]


def lora_entries(job: GenerationJob):
    return job.lora_entries.select_related("lora").order_by("position")


def generation_of_image(image: Image) -> GenerationJob | None:
    """The job that first made this image, or None."""
    from ..models import GenerationOutput

    output = GenerationOutput.objects.select_related("job", "job__base_model").filter(image=image).first()
    return output.job if output else None


def settings_from_image(image: Image, user) -> tuple[dict, dict[int, float], list[str]]:
    """Form settings that reproduce `image`: (initial values, {LoRA id: weight}, notes for the user).

    Images made here carry their job; other PNGs may carry A1111 "parameters" text (from A1111, Forge, ...),
    read without loading any model. LoRAs the user may not use, or of another model kind, are left out with a note.
    """
    from ..models import GenerationOutput

    notes: list[str] = []
    output = GenerationOutput.objects.select_related("job", "job__base_model").filter(image=image).first()
    usable = {lora.name: lora for lora in usable_loras(user)}
    if output is not None:
        job = output.job
        initial = {"prompt": job.prompt, "negative_prompt": job.negative_prompt, "base_model": job.base_model_id,
                   "scheduler": job.scheduler, "steps": job.steps, "guidance_scale": job.guidance_scale,
                   "seed": output.seed, "width": job.width, "height": job.height, "count": 1,
                   **_mode_settings(job, user, notes)}
        wanted = [(entry.lora.name, entry.weight) for entry in lora_entries(job)]
        kind = job.base_model.kind
    else:
        parsed = _png_parameters(image)
        if parsed is None:
            return {}, {}, ["This image carries no generation settings."]
        initial = {"prompt": parsed.get("prompt", ""), "negative_prompt": parsed.get("negative_prompt", ""),
                   "count": 1}
        for key, field in (("steps", "steps"), ("cfg_scale", "guidance_scale"), ("seed", "seed"),
                           ("width", "width"), ("height", "height"), ("scheduler", "scheduler")):
            if parsed.get(key) is not None:
                initial[field] = parsed[key]
        _a1111_mode_settings(parsed.get("fields") or {}, initial, notes)
        if parsed.get("sampler") and not parsed.get("scheduler"):
            notes.append(f"The sampler {parsed['sampler']!r} is not available here; pick another.")
        base = BaseModel.objects.filter(name=parsed.get("model") or "").first()
        if base is not None:
            initial["base_model"] = base.pk
        elif parsed.get("model"):
            notes.append(f"The model {parsed['model']!r} is not registered here; the default model is chosen.")
        base = base or BaseModel.default()
        kind = base.kind if base else None
        wanted = list(parsed.get("loras") or [])
    weights: dict[int, float] = {}
    for name, weight in wanted:
        lora = usable.get(name)
        if lora is None:
            notes.append(f"The LoRA {name!r} is not one you may use, so it was left out.")
        elif kind and lora.base_model.kind != kind:
            notes.append(f"The LoRA {name!r} is for another kind of model, so it was left out.")
        else:
            weights[lora.pk] = weight
    return initial, weights, notes


def _png_parameters(image: Image) -> dict | None:
    from django.conf import settings
    from django.core.files.storage import default_storage

    from ..ml.a1111 import parse_a1111_parameters, read_png_parameters

    if image.format != "PNG" or image.bytes > settings.GALLERY_MAX_UPLOAD_BYTES:
        return None
    try:
        with default_storage.open(image.file.name, "rb") as handle:
            text = read_png_parameters(handle.read())
    except Exception:  # a missing or unreadable file simply has no settings to offer
        return None
    return parse_a1111_parameters(text) if text else None


def settings_from_job(job: GenerationJob, user) -> tuple[dict, dict[int, float], list[str]]:
    """Form settings to start from a job: the same, except a seed the user left random stays random."""
    notes: list[str] = []
    initial = {"prompt": job.prompt, "negative_prompt": job.negative_prompt, "base_model": job.base_model_id,
               "scheduler": job.scheduler, "steps": job.steps, "guidance_scale": job.guidance_scale,
               "seed": None if job.counters.get("seed_was_random") else job.seed, "width": job.width,
               "height": job.height, "count": job.count, **_mode_settings(job, user, notes)}
    usable = {lora.pk for lora in usable_loras(user)}
    weights = {}
    for entry in lora_entries(job):
        if entry.lora_id in usable:
            weights[entry.lora_id] = entry.weight
        else:
            notes.append(f"The LoRA {entry.lora.name!r} is not one you may use, so it was left out.")
    return initial, weights, notes


def _mode_settings(job: GenerationJob, user, notes: list[str]) -> dict:
    """The form values of a job's mode: source (if the user may still see it), mask, strengths, hires fix."""
    values = {"mode": job.mode, "hires_scale": job.hires_scale, "hires_steps": job.hires_steps,
              "hires_strength": job.hires_strength}
    if job.mode == "txt2img":
        return values
    values["strength"] = job.strength
    if job.mode == "inpaint" and job.mask_png:
        values["mask_png"] = bytes(job.mask_png)
    if job.source_image_id and Image.objects.accessible_to(user).filter(pk=job.source_image_id).exists():
        values["source_image"] = job.source_image_id
    else:
        notes.append("The source image of these settings is gone or not yours to use; pick another.")
    return values


def _a1111_mode_settings(fields: dict, initial: dict, notes: list[str]) -> None:
    """Hires fix and denoising strength from A1111 parameters (the source image itself is not in a PNG)."""
    def number(key, convert):
        try:
            return convert(fields[key]) if key in fields else None
        except ValueError:
            return None

    scale, strength, steps = number("Hires upscale", float), number("Denoising strength", float), number(
        "Hires steps", int)
    if scale is not None:
        initial["hires_scale"] = scale
        if strength is not None:
            initial["hires_strength"] = strength
        initial["hires_steps"] = steps or 0
    elif strength is not None:
        initial["strength"] = strength
        notes.append("This image was made from another image; pick a source for image to image.")
