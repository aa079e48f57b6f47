"""Fixtures for the training-run tests (Django side): folders, base model rows, albums, run helpers.

Test modules import what they use; `tiny_model` (the real tiny pipeline, built once per session) comes
from conftest.py.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from imagineer.models import JobStatus

RESOLUTION = 32
# Settings that make the tiny model learn visibly in a few CPU steps.
FAST = dict(steps=6, batch_size=2, learning_rate=2e-2, rank=4, alpha=2.0, resolution=RESOLUTION, seed=7,
            checkpoint_every=2, random_flip=True)


def picture(colour: str, size: tuple[int, int]) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).ellipse((4, 4, size[0] - 4, size[1] - 4), fill="white")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


COLOURS = [("red", (48, 32)), ("green", (32, 32)), ("blue", (32, 48)), ("yellow", (40, 40))]


@pytest.fixture
def training_dirs(settings, tmp_path):
    """Models, work, cache and artifact folders private to the test."""
    settings.MODELS_DIR = tmp_path / "models"
    settings.WORK_DIR = tmp_path / "work"
    settings.ARTIFACT_CACHE_DIR = tmp_path / "cache"
    settings.MODELS_DIR.mkdir()
    settings.WORK_DIR.mkdir()
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {"BACKEND": "django.core.files.storage.FileSystemStorage",
                      "OPTIONS": {"location": tmp_path / "artifacts", "allow_overwrite": True}},
    }
    return settings


@pytest.fixture
def unloaded_model(db):
    """A base model row for tests that never load it (forms, API, permissions)."""
    from training.models import BaseModel

    return BaseModel.objects.create(name="tiny", source="base/nonexistent-tiny", kind="sd15", source_type="folder",
                                    is_default=True)


@pytest.fixture
def tiny_base_model(db, tiny_model, training_dirs):
    """The real tiny model, stored once in the artifacts storage (as build_tiny_model does) and the default."""
    from training.basemodels import base_model_register

    return base_model_register(name="tiny", source=str(tiny_model), kind="sd15", upload=True, make_default=True)


@pytest.fixture
def make_run_album(ingest):
    """An album of coloured pictures for an owner."""
    from gallery import services as gallery_services

    def make(owner, name="Shapes", colours=COLOURS):
        album = gallery_services.album_create(owner=owner, name=name)
        images = [ingest(owner, picture(colour, size), filename=f"{colour}.png", album=album)
                  for colour, size in colours]
        return album, images

    return make


@pytest.fixture
def run_album(user, make_run_album):
    return make_run_album(user)


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"gave up waiting after {timeout}s")


def dataset_folders(settings) -> list[Path]:
    root = Path(settings.WORK_DIR) / "training"
    return sorted(root.iterdir()) if root.exists() else []


def finished(run) -> bool:
    run.refresh_from_db()
    return run.status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
