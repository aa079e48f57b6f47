"""Helpers for tests in every app (no pytest import here; fixtures live in the root conftest.py)."""

from __future__ import annotations

import io
import random
from pathlib import Path


def image_bytes(fmt: str = "JPEG", size=(96, 64), seed: int = 1, mode: str = "RGB", **save) -> bytes:
    """A structured (not flat) picture, so perceptual hashes tell different seeds apart."""
    from PIL import Image as PILImage

    rng = random.Random(seed)
    im = PILImage.new(mode, size)
    w, h = size
    blocks = 6
    for bx in range(blocks):
        for by in range(blocks):
            colour = tuple(rng.randrange(256) for _ in range(len(mode)))
            box = (bx * w // blocks, by * h // blocks, (bx + 1) * w // blocks, (by + 1) * h // blocks)
            im.paste(colour if mode != "L" else colour[0], box)
    out = io.BytesIO()
    im.save(out, format=fmt, **save)
    return out.getvalue()


def stored_files(root: Path) -> list[str]:
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
