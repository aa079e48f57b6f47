"""Flux.1 (dev and schnell): a rectified-flow transformer with CLIP-L pooled and T5 text conditioning.

dev has a guidance embedding (distilled CFG) and schnell does not; both generate with FluxPipeline. LoRAs go on
the transformer's attention projections, as diffusers' Flux LoRA recipe does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import Family, read_json

TRANSFORMER_ATTENTION = ("to_k", "to_q", "to_v", "to_out.0", "add_k_proj", "add_q_proj", "add_v_proj", "to_add_out")
_BFL_PREFIXES = ("double_blocks.", "model.diffusion_model.double_blocks.")


def _folder(index: dict[str, Any], path: Path) -> bool:
    return True


def _single_file(keys: set[str], metadata: dict[str, str]) -> bool:
    return any(k.startswith(_BFL_PREFIXES) for k in keys)


def variant_of_folder(path: Path) -> str:
    """'dev' (guidance embedding: distilled CFG) or 'schnell' (none)."""
    config = read_json(Path(path) / "transformer" / "config.json")
    return "dev" if config.get("guidance_embeds", True) else "schnell"


FAMILY = Family(
    key="flux",
    label="Flux.1",
    pipeline_class="FluxPipeline",
    native_size=1024,
    denoiser="transformer",
    prediction="flow",
    lora_targets=TRANSFORMER_ATTENTION,
    kohya_version="flux1",
    modelspec_architecture="flux-1-dev/lora",
    text_encoders=2,
    cuda_mixed_precision="bf16",
    cuda_gradient_checkpointing=True,
    single_file_config=None,
    notes=("Single Flux files hold only the transformer. Put the rest of the pipeline beside it in a "
           "<checkpoint stem>.config folder (a Flux diffusers folder: VAE, CLIP-L, T5, scheduler, tokenizers, and "
           "transformer/config.json without the transformer's weights), or register a whole diffusers folder."),
    folder_check=_folder,
    single_file_check=_single_file,
)
