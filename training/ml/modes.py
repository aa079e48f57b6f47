"""img2img, inpainting and hires fix on top of a loaded txt2img pipeline.

The warm cache (pipelines.py) holds one txt2img pipeline per base model. The other modes are derived from it
with diffusers' ``from_pipe``: the derived pipeline shares the UNet, VAE and text encoders (and so the LoRA
adapters set on them), costing no memory and no load time. The validation and the size arithmetic are
importable without torch, so the web process checks requests with the same rules as the worker.
"""

from __future__ import annotations

import weakref
from typing import Any

MODES = ("txt2img", "img2img", "inpaint")
MODE_LABELS = {"txt2img": "Text to image", "img2img": "Image to image", "inpaint": "Inpaint"}
HIRES_SCALE_RANGE = (1.0, 4.0)
HIRES_UPSCALER = "Lanczos"  # recorded as A1111's "Hires upscaler"; an image-space resize, no extra model


def hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The second pass's size: scaled, rounded down to a multiple of 8 (what the VAE needs), never smaller."""
    return max(width, int(width * scale) // 8 * 8), max(height, int(height * scale) // 8 * 8)


def hires_enabled(scale: float | None) -> bool:
    return scale is not None and scale > 1.0


def denoise_steps(steps: int, strength: float) -> int:
    """Steps a pass at this strength actually runs: A1111's and diffusers' int(steps × strength), at least 1."""
    if strength <= 0:
        return 0
    return max(1, min(steps, int(steps * strength)))


def validate_mode_params(
    *,
    mode: str,
    strength: float | None,
    has_source: bool,
    has_mask: bool,
    hires_scale: float | None = None,
    hires_steps: int | None = 0,
    hires_strength: float | None = None,
    max_steps: int = 150,
) -> dict[str, str]:
    """{field: problem} for every mode-specific problem (empty when the request is fine)."""
    problems: dict[str, str] = {}
    if mode not in MODES:
        problems["mode"] = f"unknown mode {mode!r}; choose one of {', '.join(MODES)}"
        return problems
    if mode in ("img2img", "inpaint"):
        if not has_source:
            problems["source_image"] = f"{MODE_LABELS[mode]} needs a source image"
        if strength is None or not 0.0 <= strength <= 1.0:
            problems["strength"] = f"denoising strength must be between 0 and 1 (got {strength})"
    if mode == "inpaint" and not has_mask:
        problems["mask"] = "paint the area to repaint on the mask first"
    if mode != "inpaint" and has_mask:
        problems["mask"] = "a mask is only used for inpainting"
    if hires_enabled(hires_scale):
        low, high = HIRES_SCALE_RANGE
        if mode != "txt2img":
            problems["hires_scale"] = "hires fix is a second pass after text to image; use image to image instead"
        elif not hires_scale <= high:
            problems["hires_scale"] = f"the hires upscale must be between {low:g} and {high:g} (got {hires_scale:g})"
        if hires_strength is None or not 0.0 < hires_strength <= 1.0:
            problems["hires_strength"] = (
                f"the hires denoising strength must be above 0 and at most 1 (got {hires_strength})")
        if hires_steps is None or not 0 <= hires_steps <= max_steps:
            problems["hires_steps"] = (
                f"hires steps must be between 0 (same as steps) and {max_steps} (got {hires_steps})")
    elif hires_scale is not None and hires_scale < HIRES_SCALE_RANGE[0]:
        problems["hires_scale"] = "the hires upscale must be at least 1 (1 = off)"
    return problems


# --- the worker side -----------------------------------------------------------------------------------

_DERIVED: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def derived_pipeline(pipe: Any, mode: str) -> Any:
    """The img2img or inpainting pipeline sharing `pipe`'s components (made once per loaded pipeline)."""
    if mode == "txt2img":
        return pipe
    # diffusers' auto pipelines map each txt2img class to its img2img/inpaint sibling; worker-only import.
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting

    made = _DERIVED.setdefault(pipe, {})
    if mode not in made:
        factory = {"img2img": AutoPipelineForImage2Image, "inpaint": AutoPipelineForInpainting}[mode]
        derived = factory.from_pipe(pipe)
        derived.set_progress_bar_config(disable=True)
        made[mode] = derived
    return made[mode]


def fit_image(image: Any, width: int, height: int) -> Any:
    """The source as RGB at exactly width × height (A1111's "Just resize")."""
    from PIL import Image

    image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image


def fit_mask(mask: Any, width: int, height: int) -> Any:
    """The mask as a hard black/white "L" image at width × height; white is repainted."""
    from PIL import Image

    mask = mask.convert("L")
    if mask.size != (width, height):
        mask = mask.resize((width, height), Image.Resampling.NEAREST)
    return mask.point(lambda v: 255 if v >= 128 else 0)


def vae_roundtrip(pipe: Any, image: Any, count: int = 1) -> list[Any]:
    """Denoising strength 0: the source through the VAE and back, with no denoising at all."""
    import torch

    processor = pipe.image_processor
    width, height = image.size
    with torch.inference_mode():
        pixels = processor.preprocess(image, height=height, width=width).to(pipe.device, pipe.vae.dtype)
        latents = pipe.vae.encode(pixels).latent_dist.mode()
        decoded = pipe.vae.decode(latents).sample
    picture = processor.postprocess(decoded, output_type="pil")[0]
    return [picture.copy() for _ in range(count)]


def paste_unmasked(generated: Any, source: Any, mask: Any) -> Any:
    """Keep the source's pixels wherever the mask is black, as A1111 does after inpainting."""
    from PIL import Image

    return Image.composite(generated.convert("RGB"), source, mask)


# Linear latent -> RGB factors for SD-family VAEs (4 latent channels), a well-known cheap preview: one small
# matrix product instead of a VAE decode. SDXL's VAE has its own factors.
_APPROX = {
    "sd15": ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473)),
    "sdxl": ((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
             (-0.3165, -0.2492, -0.2188)),
}


def latent_preview(latents: Any, kind: str = "sd15", index: int = 0) -> Any:
    """A small RGB PIL image approximating latents[index] without decoding (for live previews)."""
    import torch
    from PIL import Image

    sample = latents[index].detach().float().cpu()
    if sample.shape[0] != 4:
        missing = max(0, 4 - sample.shape[0])
        sample = torch.nn.functional.pad(sample, (0, 0, 0, 0, 0, missing))[:4]
    factors = torch.tensor(_APPROX.get(kind, _APPROX["sd15"]), dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", sample, factors)
    rgb = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(rgb, "RGB")
