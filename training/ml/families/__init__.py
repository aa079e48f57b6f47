"""Model families: one module each says how to recognise a family, load it, train it and describe its LoRAs.

Training, generation, registration and the metadata writers all ask this registry instead of testing
``kind == "sdxl"`` themselves. Adding a family (SD3.5, Qwen-Image, Flux.2) is one new module that defines a
``FAMILY`` and lists it in ``_MODULES``, plus its tiny test model in ``training/ml/tiny.py``.

Nothing here imports torch or diffusers at module level: the web process registers models and reads headers.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MLError

CONFIGS_DIR = Path(__file__).parent / "configs"


class UnsupportedModel(MLError, ValueError):
    """A model of a family Imagineer cannot train or generate with (yet); the message names what was found."""


@dataclass(frozen=True)
class Family:
    """Everything the rest of the code needs to know about one model family."""

    key: str  # stored in BaseModel.kind
    label: str
    pipeline_class: str  # the diffusers txt2img pipeline
    native_size: int
    denoiser: str  # "unet" or "transformer": the module that gets LoRA
    prediction: str  # "epsilon", "v_prediction" or "flow" (rectified flow / flow matching)
    lora_targets: tuple[str, ...]
    kohya_version: str  # ss_base_model_version, which UIs use to sort LoRAs by family
    modelspec_architecture: str  # "modelspec.architecture" in the LoRA header (Forge, ComfyUI, Civitai read it)
    text_encoders: int = 1
    # On CUDA: the precision and memory saving that make the family fit and train well on one GPU.
    cuda_mixed_precision: str = "fp16"
    cuda_gradient_checkpointing: bool = False
    single_file_config: str | None = None  # a folder under configs/ with this family's small config files
    notes: str = ""
    folder_check: Callable[[dict[str, Any], Path], bool] = field(default=lambda index, path: True, repr=False)
    single_file_check: Callable[[set[str], dict[str, str]], bool] = field(default=lambda keys, meta: False, repr=False)

    @property
    def uses_transformer(self) -> bool:
        return self.denoiser == "transformer"


# Families recognised only to be refused with a clear message: pipeline class -> name people know it by.
KNOWN_UNSUPPORTED_CLASSES = {
    "StableDiffusionXLImg2ImgPipeline": "Stable Diffusion XL refiner (an img2img-only second stage, not a base model)",
    "StableDiffusion3Pipeline": "Stable Diffusion 3 / 3.5",
    "StableCascadePriorPipeline": "Stable Cascade",
    "StableCascadeDecoderPipeline": "Stable Cascade",
    "PixArtAlphaPipeline": "PixArt-α",
    "PixArtSigmaPipeline": "PixArt-Σ",
    "KandinskyV22Pipeline": "Kandinsky 2.2",
    "Kandinsky3Pipeline": "Kandinsky 3",
    "AuraFlowPipeline": "AuraFlow",
    "HunyuanDiTPipeline": "Hunyuan-DiT",
    "LuminaText2ImgPipeline": "Lumina",
    "SanaPipeline": "Sana",
    "QwenImagePipeline": "Qwen-Image",
    "Flux2Pipeline": "Flux.2",
    "FluxKontextPipeline": "Flux.1 Kontext",
    "FluxFillPipeline": "Flux.1 Fill",
    "IFPipeline": "DeepFloyd IF",
    "WuerstchenPriorPipeline": "Würstchen",
    "StableDiffusionUpscalePipeline": "Stable Diffusion x4 upscaler",
    "StableDiffusionInpaintPipeline": "Stable Diffusion inpainting (a 9-channel inpainting model)",
    "StableDiffusionXLInpaintPipeline": "Stable Diffusion XL inpainting",
}


def _modules() -> list[Any]:
    from . import flux, sd2, sd15, sdxl

    # Order matters for detection: the more specific checks first (SD2 before SD1.5: both are StableDiffusionPipeline).
    return [sdxl, sd2, sd15, flux]


def families() -> list[Family]:
    return [module.FAMILY for module in _modules()]


def get_family(key: str) -> Family:
    for family in families():
        if family.key == key:
            return family
    raise UnsupportedModel(f"Unknown model family {key!r}; supported: {', '.join(f.key for f in families())}.")


def family_choices() -> list[tuple[str, str]]:
    return [(family.key, family.label) for family in families()]


def supported_labels() -> str:
    return ", ".join(family.label for family in families())


# --- detection: folders ------------------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def detect_folder(path: Path) -> Family:
    """The family of a diffusers folder, from model_index.json and small component configs (no weights read)."""
    path = Path(path)
    index = read_json(path / "model_index.json")
    if not index:
        raise UnsupportedModel(f"{path} is not a diffusers model folder: it has no readable model_index.json.")
    found = str(index.get("_class_name", ""))
    if found in KNOWN_UNSUPPORTED_CLASSES:
        raise UnsupportedModel(
            f"{path.name} is a {KNOWN_UNSUPPORTED_CLASSES[found]} model ({found}). Imagineer supports "
            f"{supported_labels()}.")
    for family in families():
        if family.pipeline_class == found and family.folder_check(index, path):
            return family
    raise UnsupportedModel(
        f"{path.name} holds a {found or 'unknown'} pipeline, which is not a family Imagineer supports "
        f"({supported_labels()}).")


# --- detection: single files ---------------------------------------------------------------------------------

# Key prefixes of the original (non-diffusers) checkpoint layouts that are refused, with the family's name.
_UNSUPPORTED_SINGLE_FILE = (
    ("model.diffusion_model.joint_blocks.", "Stable Diffusion 3 / 3.5"),
    ("joint_blocks.", "Stable Diffusion 3 / 3.5"),
    ("model.diffusion_model.x_embedder.proj.", "a DiT-style model (SD3, PixArt or Hunyuan)"),
    ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight", "a diffusers UNet saved as one file"),
)
MAX_HEADER_BYTES = 100 * 1024 * 1024


def read_safetensors_header(path: Path) -> tuple[set[str], dict[str, str]]:
    """(tensor names, __metadata__) of a .safetensors file, reading only its JSON header."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise UnsupportedModel(f"{Path(path).name} is not a safetensors file (too short).")
        (length,) = struct.unpack("<Q", raw)
        if not 2 <= length <= MAX_HEADER_BYTES:
            raise UnsupportedModel(f"{Path(path).name} is not a safetensors file (header length {length}).")
        try:
            header = json.loads(fh.read(length))
        except ValueError:
            raise UnsupportedModel(f"{Path(path).name} is not a safetensors file (unreadable header).") from None
    if not isinstance(header, dict):
        raise UnsupportedModel(f"{Path(path).name} is not a safetensors file (header is not a table).")
    meta = header.pop("__metadata__", None) or {}
    return set(header), {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def detect_single_file_keys(keys: Iterable[str], metadata: dict[str, str] | None = None, *, name: str = "") -> Family:
    keys = set(keys)
    metadata = metadata or {}
    for family in families():
        if family.single_file_check(keys, metadata):
            return family
    for prefix, label in _UNSUPPORTED_SINGLE_FILE:
        if any(k.startswith(prefix) for k in keys):
            raise UnsupportedModel(f"{name or 'The file'} is {label}, which Imagineer does not support "
                                   f"({supported_labels()}).")
    if any(k.startswith("lora_unet_") or ".lora_A." in k or ".lora_down." in k for k in keys):
        raise UnsupportedModel(f"{name or 'The file'} is a LoRA, not a base model: upload it as a LoRA instead.")
    if any(k.startswith("conditioner.embedders.0.model.") for k in keys) and not any(
            k.startswith("conditioner.embedders.1.") for k in keys):
        raise UnsupportedModel(f"{name or 'The file'} is a Stable Diffusion XL refiner (an img2img-only second "
                               "stage, not a base model), which Imagineer does not support.")
    raise UnsupportedModel(f"{name or 'The file'} is not a checkpoint of a family Imagineer supports "
                           f"({supported_labels()}): its tensor names match none of them.")


def detect_single_file(path: Path) -> Family:
    """The family of a single .safetensors checkpoint, from its tensor names (the weights are not read)."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise UnsupportedModel(f"{path.name}: only .safetensors checkpoints can be recognised without loading "
                               "them (a .ckpt is a pickle that may run code); convert it to .safetensors.")
    keys, metadata = read_safetensors_header(path)
    return detect_single_file_keys(keys, metadata, name=path.name)


def detect(path: Path) -> Family:
    path = Path(path)
    return detect_folder(path) if path.is_dir() else detect_single_file(path)


def strip_prefix(keys: Iterable[str], prefix: str) -> set[str]:
    return {k[len(prefix):] for k in keys if k.startswith(prefix)}
