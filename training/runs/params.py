"""Training hyperparameters as the pages, the API and the command see them: limits, defaults, presets.

One table drives the form fields, the API schema's bounds and the service's validation, so the three
cannot disagree. No heavy imports: the web process validates with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class RunInputError(ValueError):
    """Invalid input for a run; `errors` maps a field name ("__all__" for the whole form) to messages."""

    def __init__(self, errors: Mapping[str, list[str] | str]):
        self.errors = {key: [value] if isinstance(value, str) else list(value) for key, value in errors.items()}
        # Each message is a sentence that names its field, so the text alone is clear in a terminal.
        super().__init__(" ".join(msg for msgs in self.errors.values() for msg in msgs))


@dataclass(frozen=True)
class Param:
    name: str
    kind: type
    default: Any
    label: str
    minimum: float | None = None
    maximum: float | None = None
    help: str = ""
    exclusive_minimum: bool = False


MIXED_PRECISION = ("no", "fp16", "bf16")
MAX_SAMPLE_PROMPT = 500

PARAMS: dict[str, Param] = {p.name: p for p in [
    Param("steps", int, 500, "Steps", 1, 100_000, "Optimizer steps (or give epochs instead)."),
    Param("batch_size", int, 1, "Batch size", 1, 64),
    Param("learning_rate", float, 1e-4, "Learning rate", 0, 1, "AdamW learning rate.", exclusive_minimum=True),
    Param("rank", int, 16, "Rank", 1, 256, "LoRA rank: bigger learns more detail, and makes a bigger file."),
    Param("alpha", float, None, "Alpha", 0, 1024, "LoRA alpha; the update is scaled by alpha / rank. Empty: the rank.",
          exclusive_minimum=True),
    Param("resolution", int, 512, "Resolution", 16, 2048, "Training size in pixels (a multiple of 8)."),
    Param("seed", int, 0, "Seed", 0, 2**31 - 1),
    Param("mixed_precision", str, "no", "Mixed precision", help="fp16/bf16 need a CUDA GPU; the CPU trains in fp32."),
    Param("gradient_checkpointing", bool, False, "Gradient checkpointing", help="Less memory, slower steps."),
    Param("caption_dropout", float, 0.0, "Caption dropout", 0, 1, "Share of captions replaced by empty text."),
    Param("center_crop", bool, False, "Centre crop", help="Crop the centre instead of a random spot."),
    Param("random_flip", bool, True, "Random flip", help="Mirror images at random."),
    Param("checkpoint_every", int, 100, "Checkpoint every", 0, 100_000,
          "Steps between checkpoints (0: only at the end); a resume continues from the last one."),
    Param("sample_every", int, 0, "Sample every", 0, 100_000, "Steps between sample images (0: none)."),
    Param("sample_prompt", str, "", "Sample prompt",
          help="Prompt for the sample images. Empty: the caption of the dataset's first image."),
]}

MAX_EPOCHS = 1000

# Presets fill the fields on the create page; every value can still be edited before starting. Each one
# samples a few times along the way, so the run page shows what the LoRA is learning.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"steps": 300, "batch_size": 1, "learning_rate": 2e-4, "rank": 8, "alpha": 8.0,
              "checkpoint_every": 100, "sample_every": 100},
    "standard": {"steps": 1000, "batch_size": 2, "learning_rate": 1e-4, "rank": 16, "alpha": 16.0,
                 "checkpoint_every": 200, "sample_every": 250},
    "strong": {"steps": 3000, "batch_size": 2, "learning_rate": 1e-4, "rank": 32, "alpha": 16.0,
               "checkpoint_every": 250, "sample_every": 500},
}
PRESET_LABELS = {"quick": "Quick (300 steps, rank 8)", "standard": "Standard (1000 steps, rank 16)",
                 "strong": "Strong (3000 steps, rank 32)"}


def default_resolution(kind: str) -> int:
    """The usual size of a model family; a registered model may know its own (BaseModel.native_size)."""
    from ..models import KIND_RESOLUTIONS

    return KIND_RESOLUTIONS.get(kind, 512)


def _family_default(kind: str, name: str, default: Any) -> Any:
    """SDXL and Flux default to bf16 and gradient checkpointing, which they need to fit and train well on one
    GPU; a CPU trains in fp32 whatever is asked (the trainer says so in the log)."""
    from ..ml.families import UnsupportedModel, get_family  # no heavy imports

    try:
        family = get_family(kind)
    except UnsupportedModel:
        return default
    if name == "mixed_precision":
        return family.cuda_mixed_precision if family.cuda_mixed_precision != "fp16" else default
    return family.cuda_gradient_checkpointing or default


def _coerce(param: Param, value: Any) -> Any:
    if param.kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "on", "yes"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "off", "no", ""):
            return False
        if isinstance(value, int):
            return bool(value)
        raise ValueError("must be true or false")
    if param.kind is int:
        if isinstance(value, bool):
            raise ValueError("must be a whole number")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError("must be a whole number")
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise ValueError("must be a whole number") from None
    if param.kind is float:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError("must be a number") from None
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        return number
    if not isinstance(value, str):
        raise ValueError("must be text")
    return value.strip()


def clean_params(raw: Mapping[str, Any], *, kind: str = "sd15", image_count: int | None = None,
                 native_resolution: int | None = None, default_sample_prompt: str = "") -> dict[str, Any]:
    """Validate and complete hyperparameters; raise RunInputError naming every bad field.

    Missing or None values take their defaults (resolution: the base model's native size, else its kind's;
    alpha: the rank). With samples on and no prompt, the samples use `default_sample_prompt` (a caption
    of the dataset). `epochs`, when given, sets steps from the image count and batch size.
    """
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, Any] = {}
    for name, param in PARAMS.items():
        value = raw.get(name)
        if value is None or (isinstance(value, str) and value.strip() == "" and param.kind is not str):
            if name == "resolution":
                value = native_resolution or default_resolution(kind)
            elif name == "alpha":
                value = float(cleaned.get("rank", PARAMS["rank"].default))  # alpha = rank: a scale of 1
            elif name in ("mixed_precision", "gradient_checkpointing"):
                value = _family_default(kind, name, param.default)
            else:
                value = param.default
        try:
            value = _coerce(param, value)
        except ValueError as exc:
            errors.setdefault(name, []).append(f"{param.label} {exc}.")
            continue
        problem = _out_of_range(param, value)
        if problem:
            errors.setdefault(name, []).append(problem)
            continue
        cleaned[name] = value
    if "resolution" in cleaned and cleaned["resolution"] % 8:
        errors.setdefault("resolution", []).append("Resolution must be a multiple of 8.")
    if "mixed_precision" in cleaned and cleaned["mixed_precision"] not in MIXED_PRECISION:
        errors.setdefault("mixed_precision", []).append("Mixed precision must be no, fp16 or bf16.")
    prompt = cleaned.get("sample_prompt", "")
    if not prompt and cleaned.get("sample_every") and default_sample_prompt.strip():
        prompt = cleaned["sample_prompt"] = default_sample_prompt.strip()[:MAX_SAMPLE_PROMPT]
    if len(prompt) > MAX_SAMPLE_PROMPT:
        errors.setdefault("sample_prompt", []).append(f"The sample prompt is at most {MAX_SAMPLE_PROMPT} characters.")
    if cleaned.get("sample_every") and not prompt:
        errors.setdefault("sample_prompt", []).append("Give a sample prompt, or set “sample every” to 0.")
    epochs = raw.get("epochs")
    if epochs not in (None, ""):
        try:
            epochs = _coerce(Param("epochs", int, None, "Epochs"), epochs)
        except ValueError as exc:
            errors.setdefault("epochs", []).append(f"Epochs {exc}.")
        else:
            if not 1 <= epochs <= MAX_EPOCHS:
                errors.setdefault("epochs", []).append(f"Epochs must be between 1 and {MAX_EPOCHS}.")
            elif image_count and "batch_size" in cleaned:
                steps = math.ceil(epochs * image_count / cleaned["batch_size"])
                if steps > PARAMS["steps"].maximum:
                    errors.setdefault("epochs", []).append(
                        f"{epochs} epochs of {image_count} images is {steps} steps; the limit is "
                        f"{int(PARAMS['steps'].maximum)}.")
                else:
                    cleaned["steps"] = steps
                    cleaned["epochs"] = epochs
    if errors:
        raise RunInputError(errors)
    return cleaned


def _out_of_range(param: Param, value: Any) -> str | None:
    if param.kind not in (int, float):
        return None
    low, high = param.minimum, param.maximum
    if low is not None and (value <= low if param.exclusive_minimum else value < low):
        return f"{param.label} must be {'more than' if param.exclusive_minimum else 'at least'} {_num(low)}."
    if high is not None and value > high:
        return f"{param.label} must be at most {_num(high)}."
    return None


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
