"""Fixtures for the ML library tests: a tiny real SD model, a tiny dataset and one shared training run.

Everything runs on the CPU with the real diffusers/peft code paths; the model is small enough that a
training step or a 32 px generation takes a few hundredths of a second.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

RESOLUTION = 32
COLOURS = [("red", (48, 32)), ("green", (32, 32)), ("blue", (32, 48)), ("yellow", (40, 40))]


def _train_config(**overrides):
    from training.ml.train import TrainConfig

    # A high learning rate so a few steps visibly change the tiny model's images; alpha != rank so the
    # scale conversions between formats are really exercised.
    values = dict(
        steps=6,
        batch_size=2,
        learning_rate=2e-2,
        rank=4,
        alpha=2.0,
        resolution=RESOLUTION,
        seed=7,
        random_flip=True,
        caption_dropout=0.25,
        checkpoint_every=1,
        keep_checkpoints=2,
        sample_every=3,
        sample_prompts=["a red square"],
        sample_steps=2,
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="session")
def train_config():
    """Build a TrainConfig with the shared run's settings, overriding some."""
    return _train_config


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from training.ml.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd15", seed=0)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> list[tuple[Path, str]]:
    from PIL import Image, ImageDraw

    folder = tmp_path_factory.mktemp("dataset")
    dataset = []
    for colour, size in COLOURS:
        image = Image.new("RGB", size, colour)
        ImageDraw.Draw(image).ellipse((4, 4, size[0] - 4, size[1] - 4), fill="white")
        path = folder / f"{colour}.png"
        image.save(path)
        dataset.append((path, f"a {colour} square with a white circle"))
    return dataset


class Recorder:
    """Collects every callback a training run makes."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.steps: list[tuple[int, int, float, float]] = []
        self.checkpoints: list[tuple[int, Path]] = []
        self.samples: list[tuple[int, list[Path]]] = []
        self.logs: list[str] = []
        self.stop_after = stop_after

    def callbacks(self):
        from training.ml.train import TrainCallbacks

        return TrainCallbacks(
            on_step=lambda *args: self.steps.append(args),
            should_stop=lambda: (
                self.stop_after is not None and bool(self.steps) and self.steps[-1][0] >= self.stop_after
            ),
            on_checkpoint=lambda step, path: self.checkpoints.append((step, path)),
            on_sample=lambda step, paths: self.samples.append((step, paths)),
            on_log=self.logs.append,
        )


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_model, tiny_dataset, train_config):
    """One uninterrupted LoRA run shared by the training, kohya and generation tests."""
    from training.ml.train import train_lora

    recorder = Recorder()
    result = train_lora(
        base_model=str(tiny_model),
        kind="sd15",
        dataset=tiny_dataset,
        output_dir=tmp_path_factory.mktemp("runs") / "uninterrupted",
        config=train_config(),
        callbacks=recorder.callbacks(),
        name="tiny_style",
        device="cpu",
    )
    return result, recorder


@pytest.fixture(scope="session")
def tiny_pipe(tiny_model):
    """A loaded tiny pipeline; tests that use LoRAs call apply_loras first, including apply_loras(pipe, [])."""
    from training.ml.pipelines import load_pipeline

    return load_pipeline(str(tiny_model), kind="sd15", source_type="folder", device="cpu")


# --- generation: registry rows for the tiny model and two real LoRAs trained on it ----------------------------
# The LoRA files come from the shared training run (`trained`): its final weights and an earlier checkpoint are
# two different LoRAs for the same base model.


@pytest.fixture
def base_model(db, tiny_model, training_dirs):  # noqa: F811 - the fixture, imported below
    """The tiny model stored once in the test's artifacts storage, as build_tiny_model does."""
    from training.basemodels import base_model_register

    return base_model_register(name="tiny", source=str(tiny_model), kind="sd15", upload=True, make_default=True)


@pytest.fixture
def xl_base(db):
    from training.models import BaseModel

    # Never loaded: everything that uses it is refused before a job exists.
    return BaseModel.objects.create(name="tiny-xl", kind="sdxl", source="base/nonexistent-tiny-xl",
                                    source_type="folder")


def _make_loras(base_model, xl_base, user, other_user, final_file, early_file, *, store=True, kohya_file=None):
    from imagineer.artifacts import artifact_upload, file_sha256
    from training.models import LoraModel

    def make(name, owner, path, base=base_model, public=False, weight=0.8, kohya=None):
        key = f"loras/{name}.safetensors"
        kohya_key = f"loras/{name}-kohya.safetensors" if kohya else ""
        if store:  # in the artifacts storage, as a training run leaves it; the worker reads it through its cache
            artifact_upload(path, key)
            if kohya:
                artifact_upload(kohya, kohya_key)
        return LoraModel.objects.create(name=name, friendly_name=name.title(), owner=owner, base_model=base,
                                        diffusers_file=key, diffusers_sha256=file_sha256(path) if store else "",
                                        kohya_file=kohya_key, kohya_sha256=file_sha256(kohya) if kohya else "",
                                        default_weight=weight, is_public=public)

    return {
        "style": make("style", user, final_file, weight=1.0, kohya=kohya_file if store else None),
        "early": make("early", other_user, early_file, public=True, weight=0.6),
        "secret": make("secret", other_user, final_file),
        "xl": make("xl-style", user, final_file, base=xl_base, public=True),
    }


@pytest.fixture
def loras(base_model, user, other_user, xl_base, trained):
    """style: alice's private LoRA; early: a public one by bob; secret: bob's private one; xl: an SDXL LoRA."""
    result, _ = trained
    return _make_loras(base_model, xl_base, user, other_user, result.lora_path,
                       result.checkpoints[0] / "pytorch_lora_weights.safetensors", kohya_file=result.kohya_path)


@pytest.fixture
def registry_loras(base_model, user, other_user, xl_base, tmp_path):
    """The same registry rows as `loras`, for tests where nothing is generated (the files are never read)."""
    return _make_loras(base_model, xl_base, user, other_user, tmp_path / "final.safetensors",
                       tmp_path / "early.safetensors", store=False)


# --- pages in a real browser (test_*_browser.py) ---------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def page(monkeypatch):
    """Debian's chromium through Playwright; every page error or console error (a CSP refusal) is collected."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (scripts/setup.sh --test installs it as root)")
    # Playwright's sync API keeps an event loop in this thread between calls; the ORM calls here are synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.errors = []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
        yield page
        context.close()
        browser.close()


# --- training runs (test_runs_*.py): their fixtures live in runs_fixtures.py -----------------------------------
from .runs_fixtures import (  # noqa: E402,F401
    make_run_album,
    run_album,
    tiny_base_model,
    training_dirs,
    unloaded_model,
)
