"""Text-to-image generation on a loaded pipeline: scheduler choice, validation, progress and cancel.

The scheduler table and the validation are importable without torch, so forms in the web process use
the same names and limits as the worker.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .a1111 import a1111_parameters, parse_a1111_parameters, png_bytes_with_parameters, read_png_parameters
from .errors import GenerationCancelled

__all__ = [
    "SCHEDULERS",
    "SchedulerSpec",
    "a1111_parameters",
    "generate",
    "parse_a1111_parameters",
    "png_bytes_with_parameters",
    "read_png_parameters",
    "set_scheduler",
    "validate_generation_params",
]


@dataclass(frozen=True)
class SchedulerSpec:
    class_name: str  # a diffusers scheduler class
    a1111: str  # the sampler name A1111 shows and writes into parameters
    options: dict[str, Any] = field(default_factory=dict)


_NO_KARRAS = {"use_karras_sigmas": False}
_KARRAS = {"use_karras_sigmas": True}
_DPMPP_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2}
_DPMPP_2M_SDE = {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}

SCHEDULERS: dict[str, SchedulerSpec] = {
    "euler": SchedulerSpec("EulerDiscreteScheduler", "Euler", _NO_KARRAS),
    "euler_a": SchedulerSpec("EulerAncestralDiscreteScheduler", "Euler a"),
    "heun": SchedulerSpec("HeunDiscreteScheduler", "Heun", _NO_KARRAS),
    "lms": SchedulerSpec("LMSDiscreteScheduler", "LMS", _NO_KARRAS),
    "lms_karras": SchedulerSpec("LMSDiscreteScheduler", "LMS Karras", _KARRAS),
    "dpm2": SchedulerSpec("KDPM2DiscreteScheduler", "DPM2", _NO_KARRAS),
    "dpm2_a": SchedulerSpec("KDPM2AncestralDiscreteScheduler", "DPM2 a", _NO_KARRAS),
    "dpmpp_2m": SchedulerSpec("DPMSolverMultistepScheduler", "DPM++ 2M", {**_DPMPP_2M, **_NO_KARRAS}),
    "dpmpp_2m_karras": SchedulerSpec("DPMSolverMultistepScheduler", "DPM++ 2M Karras", {**_DPMPP_2M, **_KARRAS}),
    "dpmpp_2m_sde": SchedulerSpec("DPMSolverMultistepScheduler", "DPM++ 2M SDE", {**_DPMPP_2M_SDE, **_NO_KARRAS}),
    "dpmpp_2m_sde_karras": SchedulerSpec(
        "DPMSolverMultistepScheduler", "DPM++ 2M SDE Karras", {**_DPMPP_2M_SDE, **_KARRAS}
    ),
    "ddim": SchedulerSpec("DDIMScheduler", "DDIM"),
    "pndm": SchedulerSpec("PNDMScheduler", "PLMS", {"skip_prk_steps": True}),
    "unipc": SchedulerSpec("UniPCMultistepScheduler", "UniPC"),
    "lcm": SchedulerSpec("LCMScheduler", "LCM"),
    "dpmpp_2m_exponential": SchedulerSpec(
        "DPMSolverMultistepScheduler", "DPM++ 2M Exponential", {**_DPMPP_2M, "use_exponential_sigmas": True}),
    "dpmpp_2m_sde_exponential": SchedulerSpec(
        "DPMSolverMultistepScheduler", "DPM++ 2M SDE Exponential", {**_DPMPP_2M_SDE, "use_exponential_sigmas": True}),
    # Flow-matching models (Flux.1) sample only with their own Euler over the flow; A1111/Forge call it Euler.
    "flow_euler": SchedulerSpec("FlowMatchEulerDiscreteScheduler", "Euler"),
}
# DEIS and DDPM were offered once; A1111 has no such samplers, so the PNG metadata could not say what made an
# image. Old jobs that name them still regenerate.
LEGACY_SCHEDULERS: dict[str, SchedulerSpec] = {
    "deis": SchedulerSpec("DEISMultistepScheduler", "DEIS"),
    "ddpm": SchedulerSpec("DDPMScheduler", "DDPM"),
}
FLOW_SCHEDULERS = frozenset({"flow_euler"})


def default_scheduler_for(kind: str) -> str:
    """The sampler a model family generates with when none is chosen."""
    return "flow_euler" if kind == "flux" else "euler_a"


def scheduler_fits(kind: str, name: str) -> bool:
    """Flow-matching families take only flow schedulers, the others none of them."""
    return (name in FLOW_SCHEDULERS) == (kind == "flux")

MAX_PROMPT_CHARS = 5000
MAX_SEED = 2**32 - 1  # A1111's seed range, so seeds copy across tools
GUIDANCE_RANGE = (0.0, 30.0)


def scheduler_for_a1111(sampler: str, schedule: str | None = None) -> str | None:
    """Our scheduler name for an A1111 sampler ("DPM++ 2M" with schedule "Karras", or the old "DPM++ 2M Karras")."""
    from .a1111 import scheduler_from_a1111

    return scheduler_from_a1111(sampler, schedule)


def _setting(name: str, default: int) -> int:
    try:
        from django.conf import settings

        return int(getattr(settings, name, default))
    except Exception:  # Django not configured: benchmarks and scripts use the defaults.
        return default


def validate_generation_params(
    *,
    prompt: str,
    negative_prompt: str | None = "",
    scheduler: str,
    steps: int,
    guidance_scale: float,
    seed: int,
    width: int,
    height: int,
    count: int = 1,
    max_side: int | None = None,
    max_steps: int | None = None,
    max_count: int | None = None,
) -> None:
    """Raise ValueError naming every problem; limits default to the GENERATE_MAX_* settings."""
    max_side = max_side or _setting("GENERATE_MAX_SIDE", 2048)
    max_steps = max_steps or _setting("GENERATE_MAX_STEPS", 150)
    max_count = max_count or _setting("GENERATE_MAX_COUNT", 8)
    problems = []
    if not prompt or not prompt.strip():
        problems.append("the prompt is empty")
    if len(prompt or "") > MAX_PROMPT_CHARS or len(negative_prompt or "") > MAX_PROMPT_CHARS:
        problems.append(f"prompts are limited to {MAX_PROMPT_CHARS} characters")
    if scheduler not in SCHEDULERS and scheduler not in LEGACY_SCHEDULERS:
        problems.append(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    if not 1 <= steps <= max_steps:
        problems.append(f"steps must be between 1 and {max_steps} (got {steps})")
    low, high = GUIDANCE_RANGE
    if not low <= guidance_scale <= high:
        problems.append(f"guidance scale must be between {low:g} and {high:g} (got {guidance_scale:g})")
    if not 0 <= seed <= MAX_SEED:
        problems.append(f"seed must be between 0 and {MAX_SEED} (got {seed})")
    for label, side in (("width", width), ("height", height)):
        if side % 8 or not 8 <= side <= max_side:
            problems.append(f"{label} must be a multiple of 8 between 8 and {max_side} (got {side})")
    if not 1 <= count <= max_count:
        problems.append(f"count must be between 1 and {max_count} (got {count})")
    if problems:
        raise ValueError("Invalid generation settings: " + "; ".join(problems))


# The scheduler config each pipeline was loaded with: every switch starts from it, so options of the
# previous choice (Karras sigmas, SDE) never leak into the next one.
_BASE_SCHEDULER_CONFIG: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def set_scheduler(pipe: Any, name: str) -> None:
    """Switch the pipeline's scheduler to one of SCHEDULERS, keeping the model's noise schedule."""
    # diffusers holds the scheduler classes; only a generating worker gets here.
    import diffusers

    spec = SCHEDULERS.get(name) or LEGACY_SCHEDULERS.get(name)
    if spec is None:
        raise ValueError(f"Unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    base = _BASE_SCHEDULER_CONFIG.setdefault(pipe, pipe.scheduler.config)
    flow_model = type(pipe.scheduler).__name__.startswith("FlowMatch") or (
        "shift" in base and "beta_schedule" not in base)
    if flow_model != (name in FLOW_SCHEDULERS):
        wanted = ", ".join(sorted(FLOW_SCHEDULERS)) if flow_model else "any but flow_euler"
        raise ValueError(f"The scheduler {name!r} does not fit this model ({type(pipe).__name__}): use {wanted}.")
    pipe.scheduler = getattr(diffusers, spec.class_name).from_config(base, **spec.options)


def generate(
    pipe: Any,
    *,
    prompt: str,
    negative_prompt: str | None = "",
    scheduler: str = "euler_a",
    steps: int = 20,
    guidance_scale: float = 7.0,
    seed: int = 0,
    width: int = 512,
    height: int = 512,
    count: int = 1,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[Any]:
    """Generate `count` PIL images; image i uses seed + i, so each one can be remade on its own.

    on_step(step, total) runs after every denoising step; when should_stop() turns true the run stops
    before the next step with GenerationCancelled. Raises ValueError for invalid parameters.
    """
    # torch is needed for the per-image generators; callers already hold a loaded pipeline.
    import torch

    validate_generation_params(
        prompt=prompt,
        negative_prompt=negative_prompt,
        scheduler=scheduler,
        steps=steps,
        guidance_scale=guidance_scale,
        seed=seed,
        width=width,
        height=height,
        count=count,
    )
    if should_stop and should_stop():
        raise GenerationCancelled(0, steps)
    set_scheduler(pipe, scheduler)
    # CPU generators give the same starting noise whichever device runs the model.
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(count)]

    def step_end(pipeline: Any, index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        total = int(getattr(pipeline, "num_timesteps", steps))
        if on_step:
            on_step(index + 1, total)
        if should_stop and index + 1 < total and should_stop():
            raise GenerationCancelled(index + 1, total)
        return tensors

    with torch.inference_mode():
        result = pipe(
            prompt=prompt,
            negative_prompt=(negative_prompt or "").strip() or None,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            width=width,
            height=height,
            num_images_per_prompt=count,
            generator=generators,
            callback_on_step_end=step_end,
        )
    return list(result.images)
