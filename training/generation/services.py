"""Writes for generation: create (validate everything first, then queue), re-run, claim the fairest row, cancel.

Every way in (the form, the JSON API, the command) goes through `generation_create`, so the checks and their
messages are the same everywhere and nothing is written or queued when any of them fails.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction

from imagineer import fairqueue
from imagineer.jobs import enqueue_job, ensure_queue_available, job_cancel
from imagineer.quotas import CostTooHigh, QuotaExceeded, generation_cost_check, quota_check

from ..ml.generate import MAX_SEED, SCHEDULERS, validate_generation_params
from ..models import BaseModel, GenerationJob, GenerationLora, LoraModel, ModelKind
from . import selectors

DEFAULT_SCHEDULER = "euler_a"
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.0
DEFAULT_SIDE = {ModelKind.SD15: 512, ModelKind.SDXL: 1024}
MAX_LORAS = 8
LORA_WEIGHT_RANGE = (-4.0, 4.0)


class GenerationInputError(ValueError):
    """The request cannot be generated as given; the message says why. Nothing was created."""


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
    scheduler = scheduler or DEFAULT_SCHEDULER
    steps = DEFAULT_STEPS if steps is None else steps
    guidance_scale = DEFAULT_GUIDANCE if guidance_scale is None else guidance_scale
    width = width or DEFAULT_SIDE.get(base.kind, 512)
    height = height or DEFAULT_SIDE.get(base.kind, 512)
    count = 1 if count is None else count
    seed_was_random = seed is None
    seed = random_seed(count) if seed is None else seed
    prompt = (prompt or "").strip()
    negative_prompt = (negative_prompt or "").strip()
    try:
        validate_generation_params(prompt=prompt, negative_prompt=negative_prompt, scheduler=scheduler, steps=steps,
                                   guidance_scale=guidance_scale, seed=seed, width=width, height=height, count=count)
    except ValueError as exc:
        raise GenerationInputError(str(exc)) from exc
    if seed + count - 1 > MAX_SEED:
        raise GenerationInputError(
            f"Image n of a batch uses seed + n, so the seed must be at most {MAX_SEED - count + 1} for {count} images."
        )
    try:
        generation_cost_check(width=width, height=height, count=count, steps=steps)
    except CostTooHigh as exc:
        raise GenerationInputError(str(exc)) from exc
    if enqueue:
        ensure_queue_available()
    with transaction.atomic():
        if enqueue:
            quota_check(user=user, model=GenerationJob)  # raises QuotaExceeded
        job = GenerationJob.objects.create(
            owner=user, prompt=prompt, negative_prompt=negative_prompt, base_model=base, scheduler=scheduler,
            steps=steps, guidance_scale=guidance_scale, seed=seed, width=width, height=height, count=count,
            total_steps=steps, counters={"seed_was_random": seed_was_random},
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
