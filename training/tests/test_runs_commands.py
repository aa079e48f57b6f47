"""build_tiny_model, register_model and train_lora (cleanup_training is tested with the clean-up service)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from imagineer.artifacts import artifact_exists
from imagineer.models import JobStatus
from training.models import BaseModel, LoraModel, TrainingRun

pytestmark = pytest.mark.usefixtures("media_root", "training_dirs")


def _call(*args, **kwargs) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), **kwargs)
    return out.getvalue()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the inline job manages its own database connection, as in a worker
def test_train_lora_builds_the_tiny_model_when_none_exists_and_ends_with_the_lora_files(run_album, settings):
    output = _call("train_lora", "--album", "Shapes", "--steps", "3", "--resolution", "32", "--rank", "4",
                   "--lr", "0.01", "--checkpoint-every", "0", "--name", "CLI style", "--inline")

    tiny = Path(settings.MODELS_DIR) / "base" / "tiny"
    assert "Building the tiny model" in output and (tiny / "model_index.json").is_file()
    model = BaseModel.objects.get()
    # Stored once for every worker, under a key that names its content, never a path of this machine.
    assert (model.name, model.source_type, model.is_default) == ("tiny", "stored", True)
    assert model.source == f"base-models/tiny/{model.digest[:16]}" and len(model.digest) == 64
    run = TrainingRun.objects.get()
    assert run.status == JobStatus.SUCCEEDED and run.step == 3
    lora = LoraModel.objects.get(training_run=run)
    assert f"LoRA: {lora.name}" in output and lora.name == "cli-style"
    assert f"diffusers file: {lora.diffusers_file}" in output and artifact_exists(lora.diffusers_file)
    assert f"kohya file: {lora.kohya_file}" in output and artifact_exists(lora.kohya_file)

    # --if-missing keeps the model that is there; a real default stays the default.
    stamp = (tiny / "model_index.json").stat().st_mtime_ns
    assert "already" in _call("build_tiny_model", if_missing=True)
    assert (tiny / "model_index.json").stat().st_mtime_ns == stamp
    _call("register_model", "real", str(tiny), "--default")
    _call("build_tiny_model", if_missing=True)
    assert list(BaseModel.objects.filter(is_default=True).values_list("name", flat=True)) == ["real"]
    # Another machine (its own empty MODELS_DIR, the same storage) builds the same model: the row stays as it
    # was, so every other machine keeps working.
    settings.MODELS_DIR = Path(settings.MODELS_DIR).parent / "another-machine-models"
    assert "Building the tiny model" in _call("build_tiny_model", if_missing=True)
    again = BaseModel.objects.get(name="tiny")
    assert (again.source, again.digest, again.source_type) == (model.source, model.digest, "stored")


def test_register_model_reads_the_kind_from_the_folder_and_refuses_what_is_not_a_model(db, tiny_model, tmp_path,
                                                                                          settings):
    # A folder outside MODELS_DIR is a path of this machine only: refused unless uploaded.
    with pytest.raises(CommandError, match="is outside MODELS_DIR .* --upload"):
        _call("register_model", "local", str(tiny_model))
    output = _call("register_model", "local", str(tiny_model), "--default", "--upload")
    model = BaseModel.objects.get(name="local")
    assert (model.kind, model.source_type, model.is_default) == ("sd15", "stored", True)
    assert "Registered base model local (default)" in output and artifact_exists(f"{model.source}/manifest.json")
    # Uploading the same files again stores nothing new and keeps the same source.
    _call("register_model", "local", str(tiny_model), "--upload")
    assert BaseModel.objects.get(name="local").source == model.source
    # Under MODELS_DIR: recorded relative to it, the same on every GPU machine.
    shutil.copytree(tiny_model, Path(settings.MODELS_DIR) / "sd" / "tiny")
    _call("register_model", "shared", str(Path(settings.MODELS_DIR) / "sd" / "tiny"))
    assert BaseModel.objects.get(name="shared").source == "sd/tiny"
    # A relative path this machine does not hold is registered, with a note on what was not checked.
    output = _call("register_model", "elsewhere", "sd/other", "--source-type", "folder")
    assert "Not checked here: sd/other is not in this machine's MODELS_DIR" in output
    BaseModel.objects.filter(name="elsewhere").delete()
    with pytest.raises(CommandError, match=r"is a Stable Diffusion 1.5 model \(sd15\), not Stable Diffusion XL"):
        _call("register_model", "wrong", str(tiny_model), "--kind", "sdxl")
    with pytest.raises(CommandError, match="is not a .safetensors checkpoint"):
        (tmp_path / "notes.txt").write_text("hello")
        _call("register_model", "notes", str(tmp_path / "notes.txt"))
    with pytest.raises(CommandError, match="not a hub id"):
        _call("register_model", "missing", str(tmp_path / "nowhere" / "model"), "--source-type", "hub")
    assert sorted(BaseModel.objects.values_list("name", flat=True)) == ["local", "shared"]


@pytest.mark.django_db(transaction=True)
def test_train_lora_exits_non_zero_when_the_input_is_bad_or_the_run_fails(run_album, tmp_path):
    with pytest.raises(CommandError, match="No album named 'Nope'"):
        _call("train_lora", "--album", "Nope", "--inline")
    BaseModel.objects.create(name="gone", source="base/gone", kind="sd15", source_type="folder", is_default=True)
    with pytest.raises(CommandError, match="Steps must be at least 1."):
        _call("train_lora", "--album", "Shapes", "--steps", "0", "--inline")
    assert TrainingRun.objects.count() == 0
    with pytest.raises(CommandError, match=r"failed: Base model gone: base/gone is not in this machine's MODELS_DIR"):
        _call("train_lora", "--album", "Shapes", "--steps", "2", "--resolution", "32", "--inline")
    assert TrainingRun.objects.get().status == JobStatus.FAILED
