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
    choices: tuple[tuple[str, str], ...] = ()  # (value, label) for a pick-one text parameter


MIXED_PRECISION = ("no", "fp16", "bf16")
MAX_SAMPLE_PROMPT = 500
MAX_TRIGGER_WORD = 100

OPTIMIZER_CHOICES = (("adamw", "AdamW"), ("adamw8bit", "AdamW 8-bit (CUDA + bitsandbytes)"),
                     ("adafactor", "Adafactor"), ("prodigy", "Prodigy (set the learning rate to 1)"))
SCHEDULER_CHOICES = tuple((s, s.replace("_", " ").capitalize()) for s in (
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"))
MODULE_SET_CHOICES = (("attention", "Attention only"),
                      ("kohya", "kohya default (attention, feed-forward, proj_in/out)"),
                      ("locon", "kohya default + convolutions (LoCon)"))

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
    # The options below are stored together in TrainingRun.options (OPTION_NAMES).
    Param("optimizer", str, "adamw", "Optimizer", choices=OPTIMIZER_CHOICES,
          help="AdamW 8-bit needs a CUDA worker with bitsandbytes; Prodigy finds its own step size (learning rate 1)."),
    Param("lr_scheduler", str, "constant", "LR scheduler", choices=SCHEDULER_CHOICES),
    Param("lr_warmup_steps", int, 0, "Warmup steps", 0, 100_000, "Steps the learning rate ramps up from 0."),
    Param("gradient_accumulation", int, 1, "Gradient accumulation", 1, 64,
          "Batches added up per optimizer step: a bigger effective batch for the same memory."),
    Param("max_grad_norm", float, 1.0, "Max grad norm", 0, 1000, "Gradient clipping (0: off)."),
    Param("weight_decay", float, 1e-2, "Weight decay", 0, 1),
    Param("min_snr_gamma", float, 0.0, "Min-SNR gamma", 0, 100,
          "Min-SNR loss weighting (0: off; 5 is usual): steadier training, faster convergence."),
    Param("noise_offset", float, 0.0, "Noise offset", 0, 1,
          "Lets the LoRA learn very dark or bright images (0: off; 0.05–0.1 is usual)."),
    Param("lora_modules", str, "attention", "LoRA layers", choices=MODULE_SET_CHOICES,
          help="Which layers get LoRA; every choice exports a kohya file A1111 and ComfyUI load."),
    Param("train_text_encoder", bool, False, "Train the text encoder",
          help="Also a LoRA on the text encoder(s); slower, and text embeddings cannot be cached."),
    Param("text_encoder_lr", float, None, "Text encoder LR", 0, 1,
          "Learning rate of the text-encoder LoRA. Empty: the learning rate.", exclusive_minimum=True),
    Param("trigger_word", str, "", "Trigger word",
          help="Put first in every caption that lacks it; use it in prompts to call up the LoRA."),
    Param("shuffle_tags", bool, False, "Shuffle tags", help="Shuffle comma-separated caption tags every step."),
    Param("keep_tags", int, 0, "Keep first tags", 0, 100, "Tags at the start of a caption that shuffling keeps."),
    Param("clip_skip", int, 1, "Clip skip", 1, 12, "2: condition on the text encoder's second-last layer (SD1.5 "
          "anime models)."),
    Param("cache", bool, True, "Cache latents",
          help="Run the VAE and text encoder once per image and caption instead of every step (faster)."),
]}

# Parameters kept in TrainingRun.options rather than in columns of their own.
OPTION_NAMES = ("optimizer", "lr_scheduler", "lr_warmup_steps", "gradient_accumulation", "max_grad_norm",
                "weight_decay", "min_snr_gamma", "noise_offset", "lora_modules", "train_text_encoder",
                "text_encoder_lr", "trigger_word", "shuffle_tags", "keep_tags", "clip_skip", "cache")

MAX_EPOCHS = 1000

# Presets fill the fields on the create page; every value can still be edited before starting. Each one
# samples a few times along the way, so the run page shows what the LoRA is learning.
_PLAIN = {"optimizer": "adamw", "lr_scheduler": "constant", "lr_warmup_steps": 0, "lora_modules": "attention",
          "min_snr_gamma": 0.0, "noise_offset": 0.0}
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"steps": 300, "batch_size": 1, "learning_rate": 2e-4, "rank": 8, "alpha": 8.0,
              "checkpoint_every": 100, "sample_every": 100, **_PLAIN},
    "standard": {"steps": 1000, "batch_size": 2, "learning_rate": 1e-4, "rank": 16, "alpha": 16.0,
                 "checkpoint_every": 200, "sample_every": 250, **_PLAIN},
    "strong": {"steps": 3000, "batch_size": 2, "learning_rate": 1e-4, "rank": 32, "alpha": 16.0,
               "checkpoint_every": 250, "sample_every": 500, **_PLAIN},
    # What kohya_ss users reach for: kohya's layer set, min-SNR 5, a little offset noise, cosine with warmup.
    "kohya": {"steps": 1500, "batch_size": 2, "learning_rate": 1e-4, "rank": 16, "alpha": 8.0,
              "checkpoint_every": 250, "sample_every": 250, "optimizer": "adamw", "lr_scheduler": "cosine",
              "lr_warmup_steps": 100, "lora_modules": "kohya", "min_snr_gamma": 5.0, "noise_offset": 0.05},
}
PRESET_LABELS = {"quick": "Quick (300 steps, rank 8)", "standard": "Standard (1000 steps, rank 16)",
                 "strong": "Strong (3000 steps, rank 32)",
                 "kohya": "kohya-style (1500 steps, kohya layers, min-SNR 5, cosine)"}


def default_resolution(kind: str) -> int:
    """The usual size of a model family; a registered model may know its own (BaseModel.native_size)."""
    from ..models import KIND_RESOLUTIONS

    return KIND_RESOLUTIONS.get(kind, 512)


def family_default(kind: str, name: str, default: Any) -> Any:
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
        blank = isinstance(value, str) and value.strip() == "" and (param.kind is not str or bool(param.choices))
        if value is None or blank:
            if name == "resolution":
                value = native_resolution or default_resolution(kind)
            elif name == "alpha":
                value = float(cleaned.get("rank", PARAMS["rank"].default))  # alpha = rank: a scale of 1
            elif name in ("mixed_precision", "gradient_checkpointing"):
                value = family_default(kind, name, param.default)
            else:
                value = param.default
            if value is None:
                cleaned[name] = None  # an optional value left empty (text_encoder_lr: the learning rate)
                continue
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
    for name, param in PARAMS.items():
        if param.choices and name in cleaned and cleaned[name] not in dict(param.choices):
            allowed = ", ".join(value for value, _ in param.choices)
            errors.setdefault(name, []).append(f"{param.label} must be one of {allowed} (got {cleaned[name]!r}).")
    if cleaned.get("optimizer") == "prodigy" and cleaned.get("text_encoder_lr") not in (None, cleaned.get(
            "learning_rate")):
        errors.setdefault("text_encoder_lr", []).append(
            "Prodigy adapts one step size for everything: leave the text encoder LR empty.")
    trigger = cleaned.get("trigger_word", "")
    if "," in trigger or len(trigger) > MAX_TRIGGER_WORD:
        errors.setdefault("trigger_word", []).append(
            f"The trigger word is one tag: no commas, at most {MAX_TRIGGER_WORD} characters.")
    if cleaned.get("clip_skip", 1) > 1 and kind == "sdxl":
        errors.setdefault("clip_skip", []).append("Clip skip is for SD1.5 models; SDXL already uses the "
                                                  "second-last layer. Leave it at 1.")
    if kind == "flux":  # flow matching on the transformer's attention: the UNet recipe's options do not apply
        for field, off, why in (
                ("train_text_encoder", False, "Flux.1 trains no text-encoder LoRA (its T5 encoder is too large)."),
                ("min_snr_gamma", 0.0, "Min-SNR weighting is for noise-prediction models, not Flux.1."),
                ("noise_offset", 0.0, "Noise offset is for noise-prediction models, not Flux.1."),
                ("clip_skip", 1, "Clip skip does not apply to Flux.1."),
                ("lora_modules", "attention", "Flux.1 LoRAs train on the transformer's attention.")):
            if field in cleaned and cleaned[field] not in (off, None):
                errors.setdefault(field, []).append(why)
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
