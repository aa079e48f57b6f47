"""Exceptions raised by the ML library; kept free of heavy imports so callers can catch them cheaply."""

from __future__ import annotations


class MLError(Exception):
    """Base class for errors the job layer reports to the user as they are."""


class ModelNotFound(MLError, FileNotFoundError):
    """A base model or LoRA path does not exist or is not a usable model."""


class WrongModelKind(MLError, ValueError):
    """The model on disk is not of the kind (sd15/sdxl) that was asked for."""


class TrainingCancelled(MLError):
    """Training stopped because should_stop() asked for it; a checkpoint at `step` was saved first."""

    def __init__(self, step: int, checkpoint: str | None) -> None:
        self.step = step
        self.checkpoint = checkpoint
        where = f"; checkpoint saved at {checkpoint}" if checkpoint else ""
        super().__init__(f"Training cancelled at step {step}{where}")


class NonFiniteLoss(MLError):
    """The loss became NaN or infinite; continuing would only corrupt the LoRA."""

    def __init__(self, step: int, value: float) -> None:
        self.step = step
        self.value = value
        what = "NaN" if value != value else "infinite"
        super().__init__(
            f"Loss became {what} at step {step}; lower the learning rate, enable gradient clipping "
            f"(max_grad_norm) or use mixed_precision='no'."
        )


class GenerationCancelled(MLError):
    """Generation stopped between denoising steps because should_stop() asked for it."""

    def __init__(self, step: int, total: int) -> None:
        self.step = step
        self.total = total
        super().__init__(f"Generation cancelled at step {step} of {total}")
