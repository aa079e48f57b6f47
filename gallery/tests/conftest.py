import io
import random

import pytest
from PIL import Image as PILImage


def image_bytes(fmt: str = "JPEG", size=(96, 64), seed: int = 1, mode: str = "RGB", **save) -> bytes:
    """A structured (not flat) picture, so perceptual hashes tell different seeds apart."""
    rng = random.Random(seed)
    im = PILImage.new(mode, size)
    w, h = size
    blocks = 6
    for bx in range(blocks):
        for by in range(blocks):
            colour = tuple(rng.randrange(256) for _ in range(len(mode) if mode != "P" else 1))
            box = (bx * w // blocks, by * h // blocks, (bx + 1) * w // blocks, (by + 1) * h // blocks)
            im.paste(colour if mode != "L" else colour[0], box)
    out = io.BytesIO()
    im.save(out, format=fmt, **save)
    return out.getvalue()


@pytest.fixture
def make_image_bytes():
    return image_bytes


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """Each test stores files in its own folder."""
    root = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": root}},
    }
    settings.MEDIA_ROOT = root
    return root


def stored_files(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def ingest(db):
    from gallery.services import image_ingest

    def run(owner, data=None, *, seed=1, fmt="JPEG", **kwargs):
        default_name = "" if data is not None else f"img{seed}.{fmt.lower()}"
        data = data if data is not None else image_bytes(fmt, seed=seed)
        return image_ingest(owner=owner, data=data, filename=kwargs.pop("filename", default_name), **kwargs).image

    return run
