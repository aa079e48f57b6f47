"""LoRA weights in the kohya-ss layout that A1111, Forge and ComfyUI read.

A kohya file names each adapted layer ``lora_unet_<module path with dots as underscores>`` (text encoders:
``lora_te_`` on SD1.5, ``lora_te1_`` and ``lora_te2_`` on SDXL, then the CLIP module path) and stores
``lora_down.weight`` (peft's lora_A), ``lora_up.weight`` (lora_B) and ``alpha``; the applied scale is
alpha / rank, the same as peft's lora_alpha / r, so the numbers carry over unchanged.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Spellings of the two LoRA matrices in peft, diffusers (old and new) and kohya state dicts.
_DOWN = re.compile(r"\.(lora_A|lora\.down|lora_down)(\.default)?\.weight$")
_UP = re.compile(r"\.(lora_B|lora\.up|lora_up)(\.default)?\.weight$")
_PREFIXES = ("base_model.model.", "unet.", "text_encoder_2.", "text_encoder.")

# ss_base_model_version per family (training/ml/families), which UIs use to sort LoRAs by family.
BASE_MODEL_VERSIONS = {"sd15": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0", "flux": "flux1"}


def text_encoder_prefixes(kind: str) -> dict[str, str]:
    """Kohya key prefix of each text encoder (by pipeline attribute) for a model kind."""
    if kind == "sdxl":
        return {"text_encoder": "lora_te1", "text_encoder_2": "lora_te2"}
    return {"text_encoder": "lora_te"}


def to_kohya(state_dict: Mapping[str, Any], *, alpha: float, prefix: str = "lora_unet") -> dict[str, Any]:
    """Convert a LoRA state dict (peft or diffusers keys) to kohya keys, adding each layer's alpha.

    Conv layers (LoCon) keep their 4-D shapes: lora_down is the k×k conv, lora_up the 1×1 one, as in kohya.
    """
    # torch builds the alpha scalars.
    import torch

    converted: dict[str, Any] = {}
    for key, tensor in state_dict.items():
        module, part = _split(key)
        if prefix != "lora_unet" and not module.startswith("text_model."):
            module = "text_model." + module  # transformers 5 dropped CLIPTextModel.text_model; A1111 keys keep it
        name = f"{prefix}_" + module.replace(".", "_")
        converted[f"{name}.{part}.weight"] = tensor.detach().contiguous()
        converted.setdefault(f"{name}.alpha", torch.tensor(float(alpha), dtype=torch.float32))
    missing = [k[: -len(".alpha")] for k in converted if k.endswith(".alpha") and not _has_pair(converted, k)]
    if missing:
        raise ValueError(f"LoRA layers without both down and up weights: {', '.join(missing[:5])}")
    return converted


def _split(key: str) -> tuple[str, str]:
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
    for pattern, part in ((_DOWN, "lora_down"), (_UP, "lora_up")):
        match = pattern.search(key)
        if match:
            return key[: match.start()], part
    raise ValueError(f"{key!r} is not a LoRA weight (expected lora_A/lora_B or lora.down/lora.up).")


def _has_pair(converted: Mapping[str, Any], alpha_key: str) -> bool:
    name = alpha_key[: -len(".alpha")]
    return f"{name}.lora_down.weight" in converted and f"{name}.lora_up.weight" in converted


def kohya_metadata(*, rank: int, alpha: float, kind: str, name: str, base_model: str = "") -> dict[str, str]:
    """The ss_* header fields kohya's trainer writes, which UIs show and some use to tell SD1.5 from SDXL."""
    return {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(float(alpha)),
        "ss_base_model_version": BASE_MODEL_VERSIONS.get(kind, kind),
        "ss_output_name": name,
        "ss_sd_model_name": Path(base_model).name if base_model else "",
        "ss_training_comment": "trained with Imagineer",
    }


def save_kohya(
    state_dict: Mapping[str, Any],
    path: Path,
    *,
    alpha: float,
    metadata: Mapping[str, str] | None = None,
    text_encoders: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write the kohya-format .safetensors atomically (temp file + rename) and return its path.

    `text_encoders` maps a kohya prefix (lora_te, lora_te1, lora_te2) to that text encoder's LoRA state dict.
    """
    # safetensors writes the file; imported here so the web process never loads it.
    from safetensors.torch import save_file

    tensors = to_kohya(state_dict, alpha=alpha)
    for prefix, te_state in (text_encoders or {}).items():
        tensors.update(to_kohya(te_state, alpha=alpha, prefix=prefix))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a LoRA is shared like any other output file
        save_file(tensors, tmp, metadata={"format": "pt", **(metadata or {})})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
