"""Helpers for the generation tests (their fixtures live in conftest.py: base_model, xl_base, loras, ...)."""

from __future__ import annotations

# Small and fast on a CPU: the tiny model makes a 32 px image in a few hundredths of a second per step.
FAST = {"width": 32, "height": 32, "steps": 2, "scheduler": "euler"}


def pixels(image):
    """An image row's decoded pixels as int16, to compare generated pictures."""
    import io

    import numpy as np
    from django.core.files.storage import default_storage
    from PIL import Image

    with default_storage.open(image.file.name, "rb") as handle:
        return np.asarray(Image.open(io.BytesIO(handle.read())).convert("RGB"), dtype=np.int16)


def file_bytes(image) -> bytes:
    from django.core.files.storage import default_storage

    with default_storage.open(image.file.name, "rb") as handle:
        return handle.read()
