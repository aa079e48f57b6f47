"""Training settings, callbacks and result: plain dataclasses with no heavy imports, so forms can validate."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

MixedPrecision = Literal["no", "fp16", "bf16"]
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


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

    def __post_init__(self) -> None:
        self.sample_prompts = tuple(self.sample_prompts)
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
