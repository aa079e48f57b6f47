"""Stable Diffusion 1.x: UNet with conv proj_in/out, one CLIP-L text encoder, epsilon prediction, 512 px."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import Family, read_json

UNET_ATTENTION = ("to_k", "to_q", "to_v", "to_out.0")


def _folder(index: dict[str, Any], path: Path) -> bool:
    unet = read_json(path / "unet" / "config.json")
    # SD2 uses linear projections and a 1024-wide OpenCLIP encoder; SD1.x neither.
    return not unet.get("use_linear_projection") and unet.get("cross_attention_dim", 768) != 1024


def _single_file(keys: set[str], metadata: dict[str, str]) -> bool:
    return any(k.startswith("model.diffusion_model.input_blocks.") for k in keys) and any(
        k.startswith("cond_stage_model.transformer.") for k in keys)


FAMILY = Family(
    key="sd15",
    label="Stable Diffusion 1.5",
    pipeline_class="StableDiffusionPipeline",
    native_size=512,
    denoiser="unet",
    prediction="epsilon",
    lora_targets=UNET_ATTENTION,
    kohya_version="sd_v1",
    modelspec_architecture="stable-diffusion-v1/lora",
    single_file_config="sd15",
    folder_check=_folder,
    single_file_check=_single_file,
)
