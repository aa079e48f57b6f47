"""Run creation, the frozen dataset, resume rules, LoRA names, base models and clean-up (no training here)."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from gallery import services as gallery_services
from imagineer.artifacts import artifact_list, artifact_save
from imagineer.jobs import QueueUnavailable, get_queue
from imagineer.models import JobStatus, MaintenanceRun
from labeling.services import caption_set
from training.basemodels import BaseModelInvalid, base_model_register
from training.models import BaseModel, LoraModel, TrainingRun
from training.runs import services
from training.runs.artifacts import stored_checkpoints
from training.runs.params import RunInputError

from .runs_fixtures import picture

pytestmark = pytest.mark.usefixtures("media_root", "training_dirs")


def _create(owner, albums, name="", **params):
    return services.run_create(owner=owner, album_ids=[a.pk for a in albums], params=params, name=name,
                               enqueue=False)


def test_it_freezes_the_dataset_with_captions_from_labels_else_the_album_name(user, run_album, unloaded_model, ingest):
    shapes, images = run_album
    caption_set(image=images[0], user=user, text="a red ellipse on white")
    run = _create(user, [shapes], steps=10)

    assert [e["image_id"] for e in run.dataset] == [i.pk for i in images]
    assert run.dataset[0]["caption"] == "a red ellipse on white"
    assert {e["caption"] for e in run.dataset[1:]} == {"Shapes"}
    assert all(e["sha256"] == i.sha256 and e["file"] == i.file.name for e, i in zip(run.dataset, images, strict=True))
    frozen = list(run.dataset)

    # Later edits to the album and the labels do not change what the run trains on.
    gallery_services.album_remove_images(album=shapes, ids=[images[1].pk])
    ingest(user, picture("purple", (40, 40)), filename="purple.png", album=shapes)
    caption_set(image=images[0], user=user, text="something else")
    run.refresh_from_db()
    assert run.dataset == frozen
    assert services.dataset_snapshot(user=user, albums=[shapes]) != frozen


def test_it_keeps_the_album_selection_even_when_an_album_is_deleted(user, make_run_album, unloaded_model):
    first, _ = make_run_album(user, "First", [("red", (32, 32))])
    second, _ = make_run_album(user, "Second", [("blue", (32, 32)), ("red", (32, 32))])
    run = _create(user, [first, second])

    assert set(run.albums.all()) == {first, second}
    assert run.album_names == ["First", "Second"]
    # The red picture is in both albums and is trained once, captioned by the first album's name.
    assert len(run.dataset) == 2 and run.dataset[0]["caption"] == "First"
    gallery_services.album_delete(album=second)
    run.refresh_from_db()
    assert list(run.albums.all()) == [first]
    assert run.album_names == ["First", "Second"] and len(run.dataset) == 2


def test_it_fills_defaults_and_turns_epochs_into_steps(user, run_album, unloaded_model):
    shapes, _ = run_album
    run = _create(user, [shapes], epochs=3, batch_size=2, rank=8)

    assert run.steps == 6 and run.total_steps == 6  # 3 passes over 4 images, 2 at a time
    assert run.counters == {"images": 4, "epochs": 3}
    assert run.learning_rate == 1e-4 and run.resolution == 512 and run.random_flip is True
    assert run.alpha == 8.0  # alpha follows the rank unless given: an update scale of 1
    assert run.status == JobStatus.QUEUED and run.base_model == unloaded_model and run.owner == user


def test_it_names_every_bad_field_and_writes_nothing(user, run_album, unloaded_model):
    shapes, _ = run_album
    with pytest.raises(RunInputError) as caught:
        _create(user, [shapes], steps=0, learning_rate="fast", resolution=100, rank=10_000, mixed_precision="fp8",
                sample_every=5)
    errors = caught.value.errors
    # (Samples without a prompt are no error: they take a caption of the dataset.)
    assert set(errors) == {"steps", "learning_rate", "resolution", "rank", "mixed_precision"}
    assert "multiple of 8" in errors["resolution"][0]
    assert TrainingRun.objects.count() == 0


def test_it_refuses_other_users_albums_and_empty_datasets(user, other_user, make_run_album, unloaded_model):
    theirs, _ = make_run_album(other_user, "Theirs")
    empty = gallery_services.album_create(owner=user, name="Empty")
    with pytest.raises(RunInputError, match="No album of yours"):
        _create(user, [theirs])
    with pytest.raises(RunInputError, match="no images"):
        _create(user, [empty])
    with pytest.raises(RunInputError, match="at least one album"):
        services.run_create(owner=user, album_ids=[], params={}, enqueue=False)
    assert TrainingRun.objects.count() == 0


def test_staff_may_train_on_anyones_album(staff_user, other_user, make_run_album, unloaded_model):
    theirs, _ = make_run_album(other_user, "Theirs")
    run = _create(staff_user, [theirs])
    assert run.owner == staff_user and len(run.dataset) == 4


def test_it_needs_a_base_model(user, run_album):
    shapes, _ = run_album
    with pytest.raises(RunInputError, match="No base model is registered"):
        _create(user, [shapes])
    with pytest.raises(RunInputError, match="No base model named 'nope'"):
        services.run_create(owner=user, album_ids=[shapes.pk], params={}, base_model="nope", enqueue=False)


def test_it_writes_nothing_when_the_queue_is_down(user, run_album, unloaded_model, settings):
    settings.RQ_QUEUES = {name: {"URL": "redis://127.0.0.1:1/0"} for name in settings.RQ_QUEUES}
    shapes, _ = run_album
    with pytest.raises(QueueUnavailable):
        services.run_create(owner=user, album_ids=[shapes.pk], params={})
    assert TrainingRun.objects.count() == 0


def test_only_cancelled_or_failed_runs_resume(user, run_album, unloaded_model, redis_conn,
                                              django_capture_on_commit_callbacks):
    shapes, _ = run_album
    run = _create(user, [shapes])
    with pytest.raises(services.RunStateError, match="is queued"):
        services.run_resume(run=run)
    TrainingRun.objects.filter(pk=run.pk).update(status=JobStatus.FAILED, error="boom", cancel_requested=True,
                                                 finished_at=timezone.now())
    run.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        resumed = services.run_resume(run=run)
    assert resumed.status == JobStatus.QUEUED and resumed.error == "" and not resumed.cancel_requested
    assert resumed.finished_at is None and "start again" in resumed.message
    assert get_queue("train").count == 1


def test_lora_names_are_unique_slugs_of_the_run_name(user, run_album, unloaded_model):
    shapes, _ = run_album
    first = _create(user, [shapes])
    TrainingRun.objects.filter(pk=first.pk).update(name="My Style!")
    first.refresh_from_db()
    lora = services.lora_register(run=first, diffusers_file=Path("/x/a.safetensors"),
                                  kohya_file=Path("/x/b.safetensors"))
    assert lora.name == "my-style" and lora.default_weight == 0.6 and not lora.is_public
    assert lora.friendly_name == "My Style!" and lora.owner == user and lora.base_model == unloaded_model
    second = _create(user, [shapes], name="my style")
    assert services.lora_name_for(second) == "my-style-2"
    # Registering the same run again updates its entry instead of adding one.
    services.lora_register(run=first, diffusers_file=f"runs/{first.pk}/lora/a.safetensors",
                           kohya_file=f"runs/{first.pk}/lora/b.safetensors", diffusers_sha256="ab" * 32)
    lora = LoraModel.objects.get()
    assert (lora.diffusers_file, lora.diffusers_sha256) == (f"runs/{first.pk}/lora/a.safetensors", "ab" * 32)


def test_base_models_are_checked_before_they_are_registered(db, settings):
    folder = Path(settings.MODELS_DIR) / "model"
    folder.mkdir()
    with pytest.raises(BaseModelInvalid, match="no model_index.json"):
        base_model_register(name="m", source=str(folder))
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    with pytest.raises(BaseModelInvalid, match=r"is a Stable Diffusion XL model \(sdxl\), not Stable Diffusion 1.5"):
        base_model_register(name="m", source=str(folder), kind="sd15")
    model = base_model_register(name="m", source=str(folder), make_default=True)
    assert model.kind == "sdxl" and model.source_type == "folder" and model.is_default and model.source == "model"
    other = base_model_register(name="hubby", source="owner/model", kind="sd15", make_default=True)
    assert other.source_type == "hub"
    assert list(BaseModel.objects.filter(is_default=True)) == [other]
    with pytest.raises(BaseModelInvalid, match="letters, digits"):
        base_model_register(name="bad name", source="owner/model")
    # No row names a path of one machine: absolute paths and climbs out of MODELS_DIR are refused.
    with pytest.raises(BaseModelInvalid, match="not a path relative to MODELS_DIR"):
        base_model_register(name="abs", source="/srv/models/x", source_type="folder")
    with pytest.raises(BaseModelInvalid, match="not a path relative to MODELS_DIR"):
        base_model_register(name="up", source="../x", source_type="folder")
    with pytest.raises(BaseModelInvalid, match="Nothing is stored under"):
        base_model_register(name="st", source="base-models/none/0123", source_type="stored")


def _checkpoints(run, steps):
    """Complete checkpoints in the artifacts storage, as a worker uploads them."""
    for step in steps:
        prefix = f"runs/{run.pk}/checkpoints/step-{step:06d}"
        artifact_save(f"{prefix}/pytorch_lora_weights.safetensors", b"x" * 100)
        artifact_save(f"{prefix}/state.json", b"{}")


def _age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_cleanup_keeps_the_last_checkpoints_and_removes_expired_and_orphan_files(
    user, run_album, unloaded_model, settings
):
    from django.core.files.storage import storages

    settings.TRAIN_KEEP_CHECKPOINTS = 2
    settings.TRAIN_FAILED_RETENTION_DAYS = 7
    shapes, _ = run_album
    done, old_failed, new_failed, running = (_create(user, [shapes]) for _ in range(4))
    TrainingRun.objects.filter(pk=done.pk).update(status=JobStatus.SUCCEEDED)
    TrainingRun.objects.filter(pk=old_failed.pk).update(status=JobStatus.FAILED,
                                                        finished_at=timezone.now() - timedelta(days=8))
    TrainingRun.objects.filter(pk=new_failed.pk).update(status=JobStatus.FAILED,
                                                        finished_at=timezone.now() - timedelta(days=1))
    TrainingRun.objects.filter(pk=running.pk).update(status=JobStatus.RUNNING)
    for run in (done, old_failed, new_failed, running):
        _checkpoints(run, [1, 2, 3, 4])
    artifact_save("runs/999999/train.log", b"a run that no longer exists")  # an orphan in storage
    _age(Path(storages["artifacts"].path("runs/999999/train.log")), 3600)
    # Evaluation grid images: one whose grid row was deleted (removed), one of a grid that exists (kept).
    from training.models import EvaluationGrid

    grid = EvaluationGrid.objects.create(owner=user, run=done, base_model=done.base_model, title="g", prompts=["x"])
    for pk in (grid.pk, grid.pk + 1000):
        artifact_save(f"grids/{pk}/grid.png", b"png")
        _age(Path(storages["artifacts"].path(f"grids/{pk}/grid.png")), 3600)
    # This machine's scratch folders: a dead worker's (gone) and a running job's (kept).
    for run in (done, running):
        run.run_dir.mkdir(parents=True)
        (run.run_dir / "train.log").write_text("local")
        _age(run.run_dir, 3600)
    datasets = Path(settings.WORK_DIR) / "training"
    datasets.mkdir()
    for name in (f"run-{running.pk}-dataset", f"run-{done.pk}-dataset", "stray"):
        (datasets / name).mkdir()
        (datasets / name / "00001.png").write_bytes(b"png")
        _age(datasets / name, 3600)

    call_command("cleanup_training", stdout=open(os.devnull, "w"))

    assert stored_checkpoints(done) == [3, 4]
    assert stored_checkpoints(new_failed) == [3, 4]
    assert stored_checkpoints(running) == [1, 2, 3, 4]  # its trainer prunes
    assert artifact_list(f"runs/{old_failed.pk}") == [] and artifact_list("runs/999999") == []
    assert artifact_list(f"grids/{grid.pk}") == [f"grids/{grid.pk}/grid.png"]
    assert artifact_list(f"grids/{grid.pk + 1000}") == []
    assert not done.run_dir.exists() and running.run_dir.exists()
    assert sorted(p.name for p in datasets.iterdir()) == [f"run-{running.pk}-dataset"]
    record = MaintenanceRun.objects.get(name="cleanup_training")
    assert record.outcome == "succeeded"
    assert record.counts["checkpoints_removed"] == 4 and record.counts["failed_runs_cleaned"] == 1
    assert record.counts["orphan_run_dirs"] == 2 and record.counts["temp_datasets_removed"] == 2
    assert record.counts["orphan_grid_dirs"] == 1


def test_the_snapshot_takes_only_album_images_the_user_may_see(user, other_user, other_client, make_run_album,
                                                               ingest, unloaded_model):
    # Bob's album holds Alice's public picture; she makes it private before he trains.
    album, (his,) = make_run_album(other_user, "Borrowed", [("blue", (32, 32))])
    hers = ingest(user, picture("red", (32, 32)), filename="red.png", is_public=True)
    gallery_services.album_add_images(album=album, images=[hers])
    assert [e["image_id"] for e in services.dataset_snapshot(user=other_user, albums=[album])] == [his.pk, hers.pk]
    gallery_services.images_set_public(user=user, ids=[hers.pk], public=False)
    run = _create(other_user, [album])
    assert [e["image_id"] for e in run.dataset] == [his.pk]
    # The create form counts what the snapshot would take.
    assert "Borrowed (1 image)" in other_client.get("/training/runs/new/").content.decode()


def test_registering_a_model_reads_its_native_size_from_its_config(db, tiny_model, settings):
    import shutil

    from training.basemodels import base_model_register

    # The tiny model's UNet works on 32×32 latents and its VAE halves once: 64 px.
    shutil.copytree(tiny_model, Path(settings.MODELS_DIR) / "tiny")
    tiny = base_model_register(name="tiny", source="tiny")
    assert tiny.native_resolution == 64 and tiny.native_size == 64
    # A real SD1.5 layout: 64×64 latents, four VAE blocks (scale 8).
    folder = Path(settings.MODELS_DIR) / "sd15"
    (folder / "unet").mkdir(parents=True)
    (folder / "vae").mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (folder / "unet" / "config.json").write_text('{"sample_size": 64}')
    (folder / "vae" / "config.json").write_text('{"block_out_channels": [128, 256, 512, 512]}')
    assert base_model_register(name="sd15", source="sd15").native_size == 512
    # A config that does not say (or says nonsense) leaves the kind's usual size.
    (folder / "unet" / "config.json").write_text('{"sample_size": "big"}')
    model = base_model_register(name="sd15", source="sd15")
    assert model.native_resolution is None and model.native_size == 512
    assert base_model_register(name="xl", source="owner/model", kind="sdxl").native_size == 1024


def test_a_run_trains_at_the_models_native_size_and_samples_a_caption_unless_told_otherwise(user, run_album):
    shapes, images = run_album
    BaseModel.objects.create(name="tiny", source="/nonexistent", kind="sd15", native_resolution=64, is_default=True)
    caption_set(image=images[0], user=user, text="a red ellipse on white")
    run = _create(user, [shapes], steps=10, sample_every=5)
    assert run.resolution == 64 and run.sample_every == 5 and run.sample_prompt == "a red ellipse on white"
    run = _create(user, [shapes], steps=10, resolution=128, sample_every=5, sample_prompt="a blue square")
    assert run.resolution == 128 and run.sample_prompt == "a blue square"
    assert _create(user, [shapes], steps=10, sample_every=0).sample_prompt == ""


def test_pruning_keeps_the_newest_complete_checkpoints_and_drops_half_uploads(user, run_album, unloaded_model):
    from training.runs.artifacts import prune_checkpoints

    shapes, _ = run_album
    run = _create(user, [shapes])
    _checkpoints(run, [2, 4, 6])
    artifact_save(f"runs/{run.pk}/checkpoints/step-000003/optimizer.pt", b"a dead worker's half upload")
    artifact_save(f"runs/{run.pk}/checkpoints/step-000008/optimizer.pt", b"being uploaded right now")
    assert prune_checkpoints(run, keep=2) == 1
    assert stored_checkpoints(run) == [4, 6]
    remaining = artifact_list(f"runs/{run.pk}/checkpoints")
    assert not [k for k in remaining if "step-000003" in k or "step-000002" in k]
    assert [k for k in remaining if "step-000008" in k]  # newer than the newest complete one: still arriving
