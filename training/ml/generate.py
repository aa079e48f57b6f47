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
from .prompt_weights import encode_prompts

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
    problems = generation_param_problems(
        prompt=prompt, negative_prompt=negative_prompt, scheduler=scheduler, steps=steps,
        guidance_scale=guidance_scale, seed=seed, width=width, height=height, count=count, max_side=max_side,
        max_steps=max_steps, max_count=max_count)
    if problems:
        raise ValueError("Invalid generation settings: " + "; ".join(problems.values()))


def generation_param_problems(
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
) -> dict[str, str]:
    """{field: problem} for every invalid setting (the form shows each one beside its field)."""
    max_side = max_side or _setting("GENERATE_MAX_SIDE", 2048)
    max_steps = max_steps or _setting("GENERATE_MAX_STEPS", 150)
    max_count = max_count or _setting("GENERATE_MAX_COUNT", 8)
    problems: dict[str, str] = {}
    if not prompt or not prompt.strip():
        problems["prompt"] = "the prompt is empty"
    if len(prompt or "") > MAX_PROMPT_CHARS or len(negative_prompt or "") > MAX_PROMPT_CHARS:
        field = "prompt" if len(prompt or "") > MAX_PROMPT_CHARS else "negative_prompt"
        problems[field] = f"prompts are limited to {MAX_PROMPT_CHARS} characters"
    if scheduler not in SCHEDULERS and scheduler not in LEGACY_SCHEDULERS:
        problems["scheduler"] = f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}"
    if not 1 <= steps <= max_steps:
        problems["steps"] = f"steps must be between 1 and {max_steps} (got {steps})"
    low, high = GUIDANCE_RANGE
    if not low <= guidance_scale <= high:
        problems["guidance_scale"] = f"guidance scale must be between {low:g} and {high:g} (got {guidance_scale:g})"
    if not 0 <= seed <= MAX_SEED:
        problems["seed"] = f"seed must be between 0 and {MAX_SEED} (got {seed})"
    for label, side in (("width", width), ("height", height)):
        if side % 8 or not 8 <= side <= max_side:
            problems[label] = f"{label} must be a multiple of 8 between 8 and {max_side} (got {side})"
    if not 1 <= count <= max_count:
        problems["count"] = f"count must be between 1 and {max_count} (got {count})"
    return problems


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
    mode: str = "txt2img",
    init_image: Any = None,
    mask_image: Any = None,
    strength: float = 0.75,
    hires_scale: float = 1.0,
    hires_steps: int = 0,
    hires_strength: float = 0.5,
    on_preview: Callable[[int, Any], None] | None = None,
    preview_every: int = 0,
) -> list[Any]:
    """Generate `count` PIL images; image i uses seed + i, so each one can be remade on its own.

    mode "img2img" starts from init_image at `strength` (0: the source through the VAE, 1: the source is
    ignored, as text to image); "inpaint" repaints where mask_image is white and keeps the source elsewhere.
    hires_scale > 1 (text to image only) upscales the result and runs a second img2img pass of hires_steps
    (0: steps) at hires_strength. on_step(step, total) runs after every denoising step over all passes; when
    should_stop() turns true the run stops before the next step with GenerationCancelled. on_preview(step,
    image) gets a cheap approximation of the first image every preview_every steps. Raises ValueError for
    invalid parameters.
    """
    # torch is needed for the per-image generators; callers already hold a loaded pipeline.
    import torch

    from . import modes

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
    problems = modes.validate_mode_params(
        mode=mode, strength=strength, has_source=init_image is not None, has_mask=mask_image is not None,
        hires_scale=hires_scale, hires_steps=hires_steps, hires_strength=hires_strength,
    )
    if problems:
        raise ValueError("Invalid generation settings: " + "; ".join(problems.values()))
    hires = modes.hires_enabled(hires_scale)
    first = steps if mode == "txt2img" or strength >= 1 else modes.denoise_steps(steps, strength)
    second = modes.denoise_steps(hires_steps or steps, hires_strength) if hires else 0
    planned = first + second
    if should_stop and should_stop():
        raise GenerationCancelled(0, planned)
    packed = hasattr(type(pipe), "_unpack_latents")  # Flux keeps its latents packed in 2x2 patches
    kind = "flux" if packed else "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd15"
    done = {"steps": 0}

    def callback(offset: int, extra: int) -> Callable[..., dict[str, Any]]:
        def step_end(pipeline: Any, index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            total = offset + int(getattr(pipeline, "num_timesteps", 0) or planned - offset - extra) + extra
            current = offset + index + 1
            done["steps"] = current
            if on_step:
                on_step(current, total)
            if on_preview and preview_every and current % preview_every == 0 and current < total:
                latents = tensors["latents"]
                if packed and latents.ndim == 3:
                    latents = type(pipeline)._unpack_latents(latents, height, width, pipeline.vae_scale_factor)
                on_preview(current, modes.latent_preview(latents, kind))
            if should_stop and current < total and should_stop():
                raise GenerationCancelled(current, total)
            return tensors

        return step_end

    def generators() -> list[Any]:
        # CPU generators give the same starting noise whichever device runs the model.
        return [torch.Generator("cpu").manual_seed(seed + i) for i in range(count)]

    negative = (negative_prompt or "").strip()
    weighted = _supports_prompt_embeds(pipe)

    def text_kwargs(repeat: int) -> dict[str, Any]:
        # A1111 weights and long prompts go in as embeddings (SD1.5/SDXL); other families get the text.
        if weighted:
            return encode_prompts(pipe, prompt, negative, repeat=repeat)
        if repeat == 1:
            return {"prompt": prompt, "negative_prompt": negative or None}
        return {"prompt": [prompt] * repeat, "negative_prompt": [negative] * repeat}

    text = text_kwargs(1)
    common = {"guidance_scale": guidance_scale, "num_images_per_prompt": count}
    source = modes.fit_image(init_image, width, height) if init_image is not None else None
    mask = modes.fit_mask(mask_image, width, height) if mask_image is not None else None

    with torch.inference_mode():
        if mode == "txt2img" or (mode == "img2img" and strength >= 1):
            set_scheduler(pipe, scheduler)
            images = pipe(**text, **common, num_inference_steps=steps, width=width, height=height,
                          generator=generators(), callback_on_step_end=callback(0, second)).images
        elif strength <= 0:  # nothing to denoise: the source as the VAE sees it
            images = modes.vae_roundtrip(pipe, source, count)
        else:
            derived = _with_scheduler(pipe, mode, scheduler)
            kwargs = {"image": source, "strength": _effective_strength(steps, strength)}
            if mode == "inpaint" or packed:  # Flux's img2img takes the size, not the image's
                kwargs.update(width=width, height=height)
            if mode == "inpaint":
                kwargs.update(mask_image=mask)
            images = derived(**text, **common, **kwargs, num_inference_steps=steps, generator=generators(),
                             callback_on_step_end=callback(0, 0)).images
        if mode == "inpaint":
            images = [modes.paste_unmasked(picture, source, mask) for picture in images]
        if hires:
            size = modes.hires_size(width, height, hires_scale)
            upscaled = [modes.fit_image(picture, *size) for picture in images]
            derived = _with_scheduler(pipe, "img2img", scheduler)
            sized = {"width": size[0], "height": size[1]} if packed else {}
            # One prompt per upscaled image, each with its own seed's generator (A1111 reuses the seed).
            images = derived(**text_kwargs(count), guidance_scale=guidance_scale, num_images_per_prompt=1,
                             image=upscaled, strength=_effective_strength(hires_steps or steps, hires_strength),
                             num_inference_steps=hires_steps or steps, generator=generators(), **sized,
                             callback_on_step_end=callback(done["steps"], 0)).images
    return list(images)


def _supports_prompt_embeds(pipe: Any) -> bool:
    name = type(pipe).__name__
    return name.startswith("StableDiffusion") and getattr(pipe, "tokenizer", None) is not None


def _effective_strength(steps: int, strength: float) -> float:
    # diffusers runs int(steps × strength) steps and refuses 0: a tiny strength still runs one step.
    return strength if int(steps * strength) >= 1 else min(1.0, 1.5 / steps)


def _with_scheduler(pipe: Any, mode: str, scheduler: str) -> Any:
    from .modes import derived_pipeline

    derived = derived_pipeline(pipe, mode)
    # The derived pipeline switches schedulers from the model's own config, like the txt2img one.
    _BASE_SCHEDULER_CONFIG.setdefault(derived, _BASE_SCHEDULER_CONFIG.setdefault(pipe, pipe.scheduler.config))
    set_scheduler(derived, scheduler)
    return derived
