"""Training runs through the real queue and a real worker on the tiny model: train, cancel, resume, fail."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from imagineer.artifacts import file_sha256
from imagineer.jobs import job_cancel
from imagineer.models import JobStatus
from training.models import LoraModel, TrainingRun, TrainingStage
from training.runs import services
from training.runs.artifacts import stored_checkpoints

from .runs_fixtures import FAST, RESOLUTION, dataset_folders, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("media_root", "training_dirs")]


def _stored(key: str) -> Path:
    from django.core.files.storage import storages

    return Path(storages["artifacts"].path(key))


def _start(user, shapes, **overrides):
    return services.run_create(owner=user, album_ids=[shapes.pk], params={**FAST, **overrides}, name="Tiny style")


def _tensors(path):
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def _image(pipe, seed=11):
    from training.ml.generate import generate

    params = dict(prompt="a red square with a white circle", steps=4, width=RESOLUTION, height=RESOLUTION,
                  scheduler="euler")
    return np.asarray(generate(pipe, **params, seed=seed)[0], dtype=np.int16)


def test_it_trains_a_lora_registers_it_and_the_file_changes_generated_images(
    user, other_client, run_album, tiny_base_model, run_worker, settings, client, tiny_model
):
    shapes, images = run_album
    run = _start(user, shapes, sample_every=5, sample_prompt="a red square")
    run_worker("train")
    run.refresh_from_db()

    assert run.status == JobStatus.SUCCEEDED, run.error
    assert run.stage == TrainingStage.DONE and run.step == run.total_steps == 6 and run.progress == 1.0
    assert len(run.loss_history) == 6 and all(math.isfinite(loss) for _, loss in run.loss_history)
    assert [step for step, _ in run.loss_history] == [1, 2, 3, 4, 5, 6]
    assert run.steps_per_second > 0 and run.attempts == 1
    lora = LoraModel.objects.get(training_run=run)
    assert (lora.name, lora.friendly_name, lora.owner) == ("tiny-style", "Tiny style", user)
    assert lora.base_model == tiny_base_model
    assert lora.default_weight == 0.6 and not lora.is_public
    # Both files are in the artifacts storage under the run's keys, with their hashes; nothing stays on the worker.
    assert lora.diffusers_file == f"runs/{run.pk}/lora/pytorch_lora_weights.safetensors"
    assert lora.kohya_file == f"runs/{run.pk}/lora/tiny-style.safetensors"
    diffusers_file, kohya_file = _stored(lora.diffusers_file), _stored(lora.kohya_file)
    assert lora.diffusers_sha256 == file_sha256(diffusers_file) and lora.kohya_sha256 == file_sha256(kohya_file)
    assert not run.run_dir.exists()

    # peft starts every up matrix at zero: non-zero ones were learned.
    weights = _tensors(diffusers_file)
    ups = [t for k, t in weights.items() if "lora_B" in k or "lora.up" in k]
    assert ups and all(float(t.abs().sum()) > 0 for t in ups)
    kohya = _tensors(kohya_file)
    assert kohya and all(k.startswith("lora_unet_") for k in kohya)
    modules = {k.split(".")[0] for k in kohya}
    assert all({f"{m}.lora_down.weight", f"{m}.lora_up.weight", f"{m}.alpha"} <= kohya.keys() for m in modules)
    assert all(float(kohya[f"{m}.alpha"]) == 2.0 for m in modules)

    # Both files load back with diffusers' load_lora_weights and change a fixed-seed image alike.
    from training.ml.pipelines import load_pipeline

    pipe = load_pipeline(str(tiny_model), kind="sd15", source_type="folder", device="cpu")
    plain = _image(pipe)
    pipe.load_lora_weights(str(diffusers_file), adapter_name="diffusers_file")
    with_lora = _image(pipe)
    pipe.load_lora_weights(str(kohya_file), adapter_name="kohya_file")
    pipe.set_adapters(["kohya_file"])
    with_kohya = _image(pipe)
    assert np.abs(with_lora - plain).mean() > 1.0
    assert np.abs(with_kohya - with_lora).mean() < 0.5

    # Samples, checkpoints, the log; the temporary dataset is gone.
    assert [s["step"] for s in run.samples] == [5]
    checkpoints = stored_checkpoints(run)
    assert len(checkpoints) <= settings.TRAIN_KEEP_CHECKPOINTS and checkpoints[-1] == 6
    assert _stored(f"runs/{run.pk}/{run.samples[0]['files'][0]}").is_file()
    log = _stored(f"runs/{run.pk}/train.log").read_text()
    assert "attempt 1" in log and "registered LoRA tiny-style" in log
    assert dataset_folders(settings) == []

    # The run page and its files for the owner; 404 for anyone else.
    client.force_login(user)
    page = client.get(run.get_absolute_url())
    assert page.status_code == 200 and b"<polyline" in page.content and b"tiny-style" in page.content
    sample = client.get(f"/training/runs/{run.pk}/samples/5/0.png")
    assert sample.status_code == 200 and sample["Content-Type"] == "image/png"
    for what in ("lora", "kohya", "log", "dataset"):
        response = client.get(f"/training/runs/{run.pk}/download/{what}/")
        assert response.status_code == 200, what
        assert "attachment" in response["Content-Disposition"]
        b"".join(response.streaming_content)
        assert other_client.get(f"/training/runs/{run.pk}/download/{what}/").status_code == 404
    assert other_client.get(f"/training/runs/{run.pk}/samples/5/0.png").status_code == 404
    # The image page lists the run (its snapshot holds the image) for the owner only; a public LoRA is
    # part of the image's lineage for everyone.
    assert "Tiny style" in client.get(images[0].get_absolute_url()).content.decode()
    LoraModel.objects.filter(pk=lora.pk).update(is_public=True)
    type(images[0]).objects.filter(pk=images[0].pk).update(is_public=True)
    image_page = other_client.get(images[0].get_absolute_url()).content.decode()
    assert "Trained LoRA" in image_page and "Tiny style" in image_page and run.get_absolute_url() not in image_page


def test_it_cancels_mid_run_with_a_checkpoint_and_resumes_at_the_saved_step(user, run_album, tiny_base_model,
                                                                              run_worker, settings):
    shapes, _ = run_album
    run = _start(user, shapes, steps=40, batch_size=1, checkpoint_every=2)
    first_checkpoint = run.run_dir / "checkpoints" / "step-000002"
    stop = threading.Event()

    def cancel_after_the_first_checkpoint():
        from django.db import connection

        try:
            wait_until(lambda: stop.is_set() or first_checkpoint.is_dir(), timeout=120, interval=0.01)
            if not stop.is_set():
                services.run_cancel(run=TrainingRun.objects.get(pk=run.pk))
        finally:
            connection.close()

    canceller = threading.Thread(target=cancel_after_the_first_checkpoint)
    canceller.start()
    try:
        run_worker("train")
    finally:
        stop.set()
        canceller.join()
    run.refresh_from_db()
    assert run.status == JobStatus.CANCELLED, run.error
    stopped_at = run.step
    assert 2 <= stopped_at < 40
    # The cancel saved a checkpoint at the very step where it stopped, so nothing trained is lost.
    assert services.latest_checkpoint_step(run) == stopped_at
    assert not LoraModel.objects.filter(training_run=run).exists()
    assert dataset_folders(settings) == []

    services.run_resume(run=run)
    run_worker("train")
    run.refresh_from_db()
    assert run.status == JobStatus.SUCCEEDED, run.error
    assert run.resumed_from == stopped_at and run.attempts == 2 and run.step == 40
    steps = [step for step, _ in run.loss_history]
    assert steps == list(range(1, 41))  # every step once: none repeated, none lost
    assert f"resuming from the checkpoint at step {stopped_at}" in _stored(f"runs/{run.pk}/train.log").read_text()
    assert LoraModel.objects.filter(training_run=run).exists()
    assert dataset_folders(settings) == []


def test_it_stops_with_a_clear_message_when_the_loss_is_not_finite(user, run_album, tiny_base_model, run_worker,
                                                                    settings):
    shapes, _ = run_album
    run = _start(user, shapes, checkpoint_every=0)
    # No form accepts this; it stands for any setting that makes training diverge.
    TrainingRun.objects.filter(pk=run.pk).update(learning_rate=1e30)
    run_worker("train")
    run.refresh_from_db()

    assert run.status == JobStatus.FAILED
    assert run.error.startswith("Loss became") and "lower the learning rate" in run.error
    assert not LoraModel.objects.filter(training_run=run).exists()
    assert not (run.run_dir / "pytorch_lora_weights.safetensors").exists()
    assert not _stored(f"runs/{run.pk}/lora/pytorch_lora_weights.safetensors").exists()
    assert dataset_folders(settings) == []


def test_a_missing_base_model_fails_the_run_and_leaves_no_dataset(user, run_album, tiny_base_model, run_worker,
                                                                  settings,
                                                                  tmp_path):
    shapes, _ = run_album
    run = _start(user, shapes)
    type(tiny_base_model).objects.filter(pk=tiny_base_model.pk).update(source="base/gone", source_type="folder")
    run_worker("train")
    run.refresh_from_db()

    assert run.status == JobStatus.FAILED
    assert run.error.startswith("Base model tiny:") and "is not in this machine's MODELS_DIR" in run.error
    assert dataset_folders(settings) == []


def test_it_trains_on_the_images_still_stored_and_fails_when_none_are(user, run_album, tiny_base_model, run_worker,
                                                                      settings,
                                                                      media_root):
    shapes, images = run_album
    run = _start(user, shapes, steps=2, checkpoint_every=0)
    for image in images:
        (media_root / image.file.name).unlink()
    run_worker("train")
    run.refresh_from_db()
    assert run.status == JobStatus.FAILED
    assert run.error == "None of the run's images are stored any more, so there is nothing to train on."
    assert dataset_folders(settings) == []


def test_a_run_cancelled_before_it_starts_trains_nothing(user, run_album, tiny_base_model, run_worker):
    shapes, _ = run_album
    run = _start(user, shapes)
    job_cancel(run)
    run_worker("train")
    run.refresh_from_db()
    assert run.status == JobStatus.CANCELLED and run.step == 0 and not run.run_dir.exists()
