"""The one interface every labeling backend implements, and the values it trades in.

Backends know nothing about Django models: a job turns `gallery.Image` rows into
`ImageInput`s, calls `label_batch`, and stores each `LabelResult` (or records each
`LabelError`). A backend may read settings, never the database.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

# LabelError.code values. A job can treat "cancelled" as "not attempted" rather than failed.
ERROR_INVALID_ANSWER = "invalid_answer"  # the model answered, but not in the required shape
ERROR_TIMEOUT = "timeout"
ERROR_CANCELLED = "cancelled"
ERROR_IMAGE = "image_unreadable"  # the image file is missing or cannot be decoded
ERROR_BACKEND = "backend_error"  # the labeler failed for this batch (CLI error, HTTP 5xx, ...)

_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/bmp": ".bmp",
    "image/tiff": ".tiff",
}


class BackendUnavailable(Exception):
    """The backend cannot label anything right now (no engine, no image, no credentials, key rejected).

    Raised by `Backend.check()` and by `label_batch` when the problem concerns the whole
    backend rather than one image: a job should stop and show the message, not retry per image.
    """


class UnknownBackend(ValueError):
    """`get_backend` was given a name that is not a backend."""


@dataclass(frozen=True)
class ImageInput:
    id: int
    path: Path
    mime: str
    width: int
    height: int

    @property
    def key(self) -> str:
        """Stable per-image key used in prompts and answers: the file name the model sees."""
        ext = _EXTENSIONS.get(self.mime) or mimetypes.guess_extension(self.mime) or Path(self.path).suffix or ".img"
        return f"img-{self.id}{ext}"


@dataclass(frozen=True)
class LabelResult:
    """A complete label for one image. Backends never return a partially filled one.

    `nsfw_confidence` is the confidence (0..1) in the `nsfw` verdict itself: nsfw=False with
    0.97 means "safe, fairly sure". None where the backend did not judge NSFW.
    """

    caption: str | None
    tags: list[str]
    categories: list[str]
    nsfw: bool | None
    nsfw_confidence: float | None
    model: str
    version: str
    # Per-tag confidence (0..1) where the backend scores each tag, like the ONNX tagger.
    tag_confidences: dict[str, float] | None = None


@dataclass(frozen=True)
class LabelError:
    """Why one image got no label. `code` is one of the ERROR_* constants."""

    message: str
    code: str = ERROR_BACKEND

    def __str__(self) -> str:
        return self.message


LabelOutcome = LabelResult | LabelError


@runtime_checkable
class Backend(Protocol):
    name: str

    def check(self) -> None:
        """Raise BackendUnavailable with a message a user can act on if the backend cannot run."""

    def label_batch(
        self, images: list[ImageInput], *, should_stop: Callable[[], bool]
    ) -> dict[int, LabelResult | LabelError]:
        """Label a batch. The answer has exactly one entry per input image id.

        `should_stop` is polled while work is in progress; when it returns True the backend
        stops as soon as it can and the images not finished get LabelError(code="cancelled").
        Raises BackendUnavailable for problems that would fail every batch.
        """


def never_stop() -> bool:
    return False


def fill_missing(
    images: list[ImageInput], outcomes: dict[int, LabelOutcome], error: LabelError
) -> dict[int, LabelOutcome]:
    """Give every image without an outcome the same error (keeps the one-entry-per-image contract)."""
    for image in images:
        outcomes.setdefault(image.id, error)
    return outcomes

