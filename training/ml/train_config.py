"""Training settings, callbacks and result: plain dataclasses with no heavy imports, so forms can validate."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

MixedPrecision = Literal["no", "fp16", "bf16"]
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
OPTIMIZERS = ("adamw", "adamw8bit", "adafactor", "prodigy")
# attention: the attention projections (the diffusers recipe); kohya: kohya sd-scripts' default set (every
# linear layer of the transformer blocks, proj_in/proj_out included); locon: kohya's set plus the ResNet,
# down- and upsampler convolutions (LoCon).
LORA_MODULE_SETS = ("attention", "kohya", "locon")


@dataclass
class TrainConfig:
    steps: int
    batch_size: int = 1
    learning_rate: float = 1e-4
    rank: int = 4
    alpha: float = 4.0
    resolution: int = 512
    seed: int = 0
    mixed_precision: MixedPrecision = "no"
    gradient_checkpointing: bool = False
    caption_dropout: float = 0.0
    center_crop: bool = False
    random_flip: bool = False
    buckets: bool = True
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    sample_every: int = 0
    sample_prompts: Sequence[str] = field(default_factory=tuple)
    sample_steps: int = 20
    gradient_accumulation: int = 1
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    max_grad_norm: float = 1.0
    weight_decay: float = 1e-2
    optimizer: str = "adamw"
    lora_modules: str = "attention"
    train_text_encoder: bool = False
    text_encoder_lr: float | None = None  # None: the UNet's learning rate
    min_snr_gamma: float = 0.0  # 0: off; 5 is the usual value
    noise_offset: float = 0.0
    trigger_word: str = ""  # put first in every caption that lacks it
    shuffle_tags: bool = False  # shuffle comma-separated tags after the first keep_tags
    keep_tags: int = 0
    clip_skip: int = 1  # kohya's convention: 1 uses the last text-encoder layer, 2 the one before
    cache: bool = True  # latents and text embeddings computed once per image/caption (see latent_cache.py)

    def __post_init__(self) -> None:
        self.sample_prompts = tuple(self.sample_prompts)
        self.trigger_word = self.trigger_word.strip()
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming every invalid field, so a form can show them all at once."""
        problems = [msg for ok, msg in self._checks() if not ok]
        if problems:
            raise ValueError("Invalid training settings: " + "; ".join(problems))

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            (self.steps >= 1, f"steps must be at least 1 (got {self.steps})"),
            (self.batch_size >= 1, f"batch_size must be at least 1 (got {self.batch_size})"),
            (0 < self.learning_rate, f"learning_rate must be positive (got {self.learning_rate})"),
            (1 <= self.rank <= 1024, f"rank must be between 1 and 1024 (got {self.rank})"),
            (self.alpha > 0, f"alpha must be positive (got {self.alpha})"),
            (
                self.resolution >= 8 and self.resolution % 8 == 0,
                f"resolution must be a multiple of 8, at least 8 (got {self.resolution})",
            ),
            (
                self.mixed_precision in ("no", "fp16", "bf16"),
                f"mixed_precision must be 'no', 'fp16' or 'bf16' (got {self.mixed_precision!r})",
            ),
            (
                0.0 <= self.caption_dropout <= 1.0,
                f"caption_dropout must be between 0 and 1 (got {self.caption_dropout})",
            ),
            (self.checkpoint_every >= 0, f"checkpoint_every must be 0 (off) or more (got {self.checkpoint_every})"),
            (self.keep_checkpoints >= 1, f"keep_checkpoints must be at least 1 (got {self.keep_checkpoints})"),
            (self.sample_every >= 0, f"sample_every must be 0 (off) or more (got {self.sample_every})"),
            (not self.sample_every or bool(self.sample_prompts), "sample_every needs at least one sample prompt"),
            (self.sample_steps >= 1, f"sample_steps must be at least 1 (got {self.sample_steps})"),
            (
                self.gradient_accumulation >= 1,
                f"gradient_accumulation must be at least 1 (got {self.gradient_accumulation})",
            ),
            (
                self.lr_scheduler in LR_SCHEDULERS,
                f"lr_scheduler must be one of {', '.join(LR_SCHEDULERS)} (got {self.lr_scheduler!r})",
            ),
            (self.lr_warmup_steps >= 0, f"lr_warmup_steps must be 0 or more (got {self.lr_warmup_steps})"),
            (self.max_grad_norm >= 0, f"max_grad_norm must be 0 (off) or more (got {self.max_grad_norm})"),
            (self.weight_decay >= 0, f"weight_decay must be 0 or more (got {self.weight_decay})"),
            (
                self.optimizer in OPTIMIZERS,
                f"optimizer must be one of {', '.join(OPTIMIZERS)} (got {self.optimizer!r})",
            ),
            (
                self.lora_modules in LORA_MODULE_SETS,
                f"lora_modules must be one of {', '.join(LORA_MODULE_SETS)} (got {self.lora_modules!r})",
            ),
            (
                self.text_encoder_lr is None or self.text_encoder_lr > 0,
                f"text_encoder_lr must be positive (got {self.text_encoder_lr})",
            ),
            (
                self.optimizer != "prodigy" or self.text_encoder_lr in (None, self.learning_rate),
                "Prodigy adapts one step size for everything: leave text_encoder_lr empty with the prodigy optimizer",
            ),
            (self.min_snr_gamma >= 0, f"min_snr_gamma must be 0 (off) or more (got {self.min_snr_gamma})"),
            (0 <= self.noise_offset <= 1, f"noise_offset must be between 0 and 1 (got {self.noise_offset})"),
            (self.keep_tags >= 0, f"keep_tags must be 0 or more (got {self.keep_tags})"),
            (1 <= self.clip_skip <= 12, f"clip_skip must be between 1 and 12 (got {self.clip_skip})"),
            ("," not in self.trigger_word, f"trigger_word must not contain a comma (got {self.trigger_word!r})"),
        ]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sample_prompts"] = list(self.sample_prompts)
        return data


def _noop(*_args: Any) -> None:
    return None


def _never() -> bool:
    return False


@dataclass
class TrainCallbacks:
    """Hooks the job layer uses for progress, cancellation, checkpoints, samples and log lines."""

    on_step: Callable[[int, int, float, float], None] = _noop  # (step, total_steps, loss, lr)
    should_stop: Callable[[], bool] = _never
    on_checkpoint: Callable[[int, Path], None] = _noop
    on_sample: Callable[[int, list[Path]], None] = _noop
    on_log: Callable[[str], None] = _noop


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    lora_path: Path  # diffusers format, pytorch_lora_weights.safetensors
    kohya_path: Path  # <name>.safetensors with lora_unet_* keys, for A1111 / ComfyUI
    final_step: int
    loss_history: list[float]  # loss_history[i] is the loss of step i + 1, across resumes
    steps_per_second: float  # over the steps this call trained, excluding sampling
    resumed_from: int | None
    checkpoints: list[Path]
