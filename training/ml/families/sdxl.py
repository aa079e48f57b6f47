"""Stable Diffusion XL base: two text encoders (CLIP-L and OpenCLIP-bigG), size/crop conditioning, 1024 px.

The refiner is refused: it has only the OpenCLIP encoder and is an img2img second stage, not a base model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import Family
from .sd15 import UNET_ATTENTION


def _folder(index: dict[str, Any], path: Path) -> bool:
    # A refiner saved as a text-to-image pipeline has no first text encoder.
    return index.get("text_encoder", "absent") not in ([None, None], None)


def _single_file(keys: set[str], metadata: dict[str, str]) -> bool:
    return any(k.startswith("conditioner.embedders.1.") for k in keys) and any(
        k.startswith("model.diffusion_model.") for k in keys)


FAMILY = Family(
    key="sdxl",
    label="Stable Diffusion XL",
    pipeline_class="StableDiffusionXLPipeline",
    native_size=1024,
    denoiser="unet",
    prediction="epsilon",
    lora_targets=UNET_ATTENTION,
    kohya_version="sdxl_base_v1-0",
    modelspec_architecture="stable-diffusion-xl-v1-base/lora",
    text_encoders=2,
    cuda_mixed_precision="bf16",
    cuda_gradient_checkpointing=True,
    single_file_config="sdxl",
    folder_check=_folder,
    single_file_check=_single_file,
)
