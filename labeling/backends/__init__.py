"""Labeling backends behind one interface (see base.py).

    backend = get_backend("claude-docker")   # or "anthropic", "local", "tagger", "captioner"
    backend.check()                          # BackendUnavailable with a message a user can act on
    outcomes = backend.label_batch(images, should_stop=lambda: job.cancel_requested)

Importing this package is cheap: docker, anthropic, nudenet, onnxruntime, torch and transformers are imported inside the
functions that use them, so the web process never loads them.
"""

from __future__ import annotations

from .base import (
    ERROR_BACKEND,
    ERROR_CANCELLED,
    ERROR_IMAGE,
    ERROR_INVALID_ANSWER,
    ERROR_TIMEOUT,
    Backend,
    BackendUnavailable,
    ImageInput,
    LabelError,
    LabelOutcome,
    LabelResult,
    UnknownBackend,
)

BACKEND_NAMES = ("local", "tagger", "captioner", "claude-docker", "anthropic")

__all__ = [
    "BACKEND_NAMES",
    "ERROR_BACKEND",
    "ERROR_CANCELLED",
    "ERROR_IMAGE",
    "ERROR_INVALID_ANSWER",
    "ERROR_TIMEOUT",
    "Backend",
    "BackendUnavailable",
    "ImageInput",
    "LabelError",
    "LabelOutcome",
    "LabelResult",
    "UnknownBackend",
    "get_backend",
]


def get_backend(name: str, **options) -> Backend:
    """A backend instance by name; options go to its constructor (tests use them, jobs need none).

    Construction is cheap and contacts nothing: call `check()` to find out whether it can run.
    """
    if name == "claude-docker":
        from .container import ContainerBackend

        return ContainerBackend(**options)
    if name == "anthropic":
        from .anthropic import AnthropicBackend

        return AnthropicBackend(**options)
    if name == "tagger":
        from .tagger import TaggerBackend

        return TaggerBackend(**options)
    if name == "captioner":
        from .captioner import CaptionerBackend

        return CaptionerBackend(**options)
    if name == "local":
        from .local import LocalBackend

        return LocalBackend(**options)
    raise UnknownBackend(f"Unknown labeling backend {name!r}; choose one of: {', '.join(BACKEND_NAMES)}")
