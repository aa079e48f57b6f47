"""Stable Diffusion 2.x: linear proj_in/out, OpenCLIP-H text encoder (penultimate layer), v-prediction at 768 px
(2.x-base at 512 px predicts epsilon; a folder's scheduler config says which)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import Family, read_json
from .sd15 import UNET_ATTENTION


def _folder(index: dict[str, Any], path: Path) -> bool:
    unet = read_json(path / "unet" / "config.json")
    return bool(unet.get("use_linear_projection")) or unet.get("cross_attention_dim") == 1024


def _single_file(keys: set[str], metadata: dict[str, str]) -> bool:
    return any(k.startswith("model.diffusion_model.input_blocks.") for k in keys) and any(
        k.startswith("cond_stage_model.model.") for k in keys)


FAMILY = Family(
    key="sd2",
    label="Stable Diffusion 2.x",
    pipeline_class="StableDiffusionPipeline",
    native_size=768,
    denoiser="unet",
    prediction="v_prediction",
    lora_targets=UNET_ATTENTION,
    kohya_version="sd_v2",
    modelspec_architecture="stable-diffusion-v2-768-v/lora",
    single_file_config="sd2",
    notes="Single files are read as SD 2.1 768-v (v-prediction); register a diffusers folder for 2.x-base.",
    folder_check=_folder,
    single_file_check=_single_file,
)
