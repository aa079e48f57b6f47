"""Generation JSON API: queue a generation, follow it, cancel it. Same authentication as the rest of /api/."""

from __future__ import annotations

from datetime import datetime

from django.http import Http404
from django.shortcuts import get_object_or_404
from ninja import Router, Schema, Status
from ninja.errors import HttpError

from imagineer.jobs import QueueUnavailable
from imagineer.quotas import QuotaExceeded

from ..models import GenerationJob
from . import selectors, services

router = Router(tags=["generation"])


class LoraIn(Schema):
    name: str
    weight: float | None = None


class GenerationIn(Schema):
    prompt: str
    negative_prompt: str = ""
    base_model: str | None = None
    loras: list[LoraIn] = []
    scheduler: str | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    width: int | None = None
    height: int | None = None
    count: int = 1
    mode: str = "txt2img"
    source_image: int | None = None
    mask_png_base64: str | None = None
    strength: float | None = None
    hires_scale: float | None = None
    hires_steps: int | None = None
    hires_strength: float | None = None


class LoraOut(Schema):
    name: str
    weight: float


class GenerationImageOut(Schema):  # not "ImageOut": that name is the gallery's in the OpenAPI schema
    id: int
    index: int
    seed: int
    url: str
    thumbnail_url: str
    download_url: str


class GenerationOut(Schema):
    id: int
    status: str
    progress: float
    step: int
    total_steps: int
    message: str
    error: str
    queue_position: int | None
    prompt: str
    negative_prompt: str
    base_model: str
    loras: list[LoraOut]
    scheduler: str
    steps: int
    guidance_scale: float
    seed: int
    width: int
    height: int
    count: int
    mode: str
    source_image: int | None
    strength: float | None
    hires_scale: float
    hires_steps: int
    hires_strength: float
    timings: dict
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    url: str
    images: list[GenerationImageOut]


def _out(job: GenerationJob, positions: dict[int, int] | None = None) -> dict:
    job.refresh_from_db()
    position = positions.get(job.pk) if positions is not None else selectors.queue_position(job)
    images = selectors.job_images(job) if job.is_finished else []
    return {
        "id": job.pk, "status": job.status, "progress": job.progress, "step": job.step,
        "total_steps": job.total_steps, "message": job.message, "error": job.error,
        "queue_position": position, "prompt": job.prompt,
        "negative_prompt": job.negative_prompt, "base_model": job.base_model.name,
        "loras": [{"name": e.lora.name, "weight": e.weight} for e in selectors.lora_entries(job)],
        "scheduler": job.scheduler, "steps": job.steps, "guidance_scale": job.guidance_scale, "seed": job.seed,
        "width": job.width, "height": job.height, "count": job.count, "timings": job.timings,
        "mode": job.mode, "source_image": job.source_image_id, "strength": job.strength,
        "hires_scale": job.hires_scale, "hires_steps": job.hires_steps, "hires_strength": job.hires_strength,
        "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
        "url": job.get_absolute_url(),
        "images": [{"id": image.pk, "index": n, "seed": job.seed + n, "url": image.get_absolute_url(),
                    "thumbnail_url": image.thumbnail_url(), "download_url": image.download_url()}
                   for n, image in enumerate(images)],
    }


def _job(request, pk: int) -> GenerationJob:
    job = get_object_or_404(GenerationJob.objects.select_related("base_model"), pk=pk)
    if not (request.user.is_staff or job.owner_id == request.user.pk):
        raise Http404
    return job


@router.post("/generations", response={201: GenerationOut},
             summary="Queue a generation: text to image (optionally with hires fix), img2img or inpainting "
                     "(400 with the reason for bad input or a request over the cost ceiling, 429 at your limit of "
                     "queued plus running generations)")
def create_generation(request, payload: GenerationIn):
    import base64
    import binascii

    try:
        mask = base64.b64decode(payload.mask_png_base64, validate=True) if payload.mask_png_base64 else None
    except (binascii.Error, ValueError):
        raise HttpError(400, "mask_png_base64 is not base64.") from None
    try:
        job = services.generation_create(
            user=request.user, prompt=payload.prompt, negative_prompt=payload.negative_prompt,
            base_model=payload.base_model, loras=[services.LoraChoice(x.name, x.weight) for x in payload.loras],
            scheduler=payload.scheduler, steps=payload.steps, guidance_scale=payload.guidance_scale,
            seed=payload.seed, width=payload.width, height=payload.height, count=payload.count,
            mode=payload.mode, source_image=payload.source_image, mask_png=mask, strength=payload.strength,
            hires_scale=payload.hires_scale, hires_steps=payload.hires_steps, hires_strength=payload.hires_strength,
        )
    except QuotaExceeded as exc:
        raise HttpError(429, str(exc))
    except services.GenerationInputError as exc:
        raise HttpError(400, str(exc))
    except QueueUnavailable as exc:
        raise HttpError(503, str(exc))
    return Status(201, _out(job))


@router.get("/generations", response=list[GenerationOut], summary="Your latest generations, newest first")
def list_generations(request, limit: int = 20):
    jobs = selectors.user_jobs(request.user).order_by("-created_at", "-pk")[: max(1, min(limit, 100))]
    positions = selectors.queue_positions()
    return [_out(job, positions) for job in jobs]


@router.get("/generations/{generation_id}", response=GenerationOut)
def get_generation(request, generation_id: int):
    return _out(_job(request, generation_id))


@router.post("/generations/{generation_id}/cancel", response=GenerationOut,
             summary="Cancel: a queued generation at once, a running one before its next denoising step")
def cancel_generation(request, generation_id: int):
    job = _job(request, generation_id)
    services.generation_cancel(job=job)
    return _out(job)
