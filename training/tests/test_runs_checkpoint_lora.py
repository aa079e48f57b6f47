"""“Use this checkpoint”: any kept checkpoint becomes a LoRA of its own, in both formats, and its files load."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from imagineer.models import JobStatus
from training.models import LoraModel
from training.runs import services
from training.runs.artifacts import prune_checkpoints

from .runs_fixtures import FAST, RESOLUTION

# The training job runs inline and manages its own database connection, as in a worker.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("media_root", "training_dirs"),
              pytest.mark.django_db(transaction=True)]


def _stored(key: str) -> Path:
    from django.core.files.storage import storages

    return Path(storages["artifacts"].path(key))


@pytest.fixture
def finished_run(user, run_album, tiny_base_model):
    from training.runs.jobs import run_training

    shapes, _ = run_album
    run = services.run_create(owner=user, album_ids=[shapes.pk], name="Pick a step", enqueue=False,
                              params={**FAST, "steps": 4, "checkpoint_every": 1, "lora_modules": "locon",
                                      "trigger_word": "zqx"})
    run_training(run.pk)
    run.refresh_from_db()
    assert run.status == JobStatus.SUCCEEDED, run.error
    return run


def test_a_kept_checkpoint_registers_a_lora_whose_files_load(finished_run, tiny_model, user_client, other_client):
    from training.ml.generate import generate
    from training.ml.pipelines import LoraSpec, apply_loras, load_pipeline

    run = finished_run
    kept = services.stored_checkpoints(run)
    assert kept == [2, 3, 4]  # TRAIN_KEEP_CHECKPOINTS is 3
    page = user_client.get(run.get_absolute_url()).content.decode()
    assert "Use this checkpoint" in page and f"/training/runs/{run.pk}/checkpoints/2/lora/" in page
    # The last step's checkpoint is the final LoRA: the page links it instead of offering a copy.
    final_lora = LoraModel.objects.get(training_run=run)
    assert f"/training/runs/{run.pk}/checkpoints/4/lora/" not in page and final_lora.get_absolute_url() in page

    url = f"/training/runs/{run.pk}/checkpoints/2/lora/"
    assert other_client.post(url).status_code == 404
    response = user_client.post(url)
    lora = LoraModel.objects.get(checkpoint_of=run)
    assert response.status_code == 302 and response["Location"] == lora.get_absolute_url()
    assert (lora.checkpoint_step, lora.owner, lora.trigger_words) == (2, run.owner, "zqx")
    assert lora.name == "pick-a-step-step-2"
    assert lora.diffusers_file.endswith("/lora/step-000002/pytorch_lora_weights.safetensors")
    assert lora.kohya_file.endswith("/lora/step-000002/pick-a-step-step-2.safetensors")
    assert services.lora_from_checkpoint(run=run, step=2) == lora  # once per step
    final = LoraModel.objects.get(training_run=run)
    # Both copies carry the run's source summary, as the final LoRA does, and their hashes are of what is stored.
    from training.runs.provenance import METADATA_KEY, read_safetensors_metadata

    summary = read_safetensors_metadata(_stored(final.kohya_file))[METADATA_KEY]
    for key, sha in ((lora.diffusers_file, lora.diffusers_sha256), (lora.kohya_file, lora.kohya_sha256)):
        assert read_safetensors_metadata(_stored(key))[METADATA_KEY] == summary
        assert hashlib.sha256(_stored(key).read_bytes()).hexdigest() == sha

    prune_checkpoints(run, keep=1)  # the registered files are copies: pruning leaves them
    assert services.stored_checkpoints(run) == [4]
    params = dict(prompt="zqx, a red square with a white circle", steps=4, width=RESOLUTION, height=RESOLUTION,
                  scheduler="euler", seed=3)
    pipe = load_pipeline(str(tiny_model), kind="sd15", source_type="folder", device="cpu")
    images = {}
    for name, key in (("diffusers", lora.diffusers_file), ("kohya", lora.kohya_file),
                      ("final", final.diffusers_file)):
        apply_loras(pipe, [LoraSpec(name, _stored(key), 1.0)])
        images[name] = np.asarray(generate(pipe, **params)[0], dtype=np.int16)
    apply_loras(pipe, [])
    plain = np.asarray(generate(pipe, **params)[0], dtype=np.int16)

    assert np.abs(images["diffusers"] - images["kohya"]).max() <= 1
    assert np.abs(images["diffusers"] - plain).max() > 2
    assert np.abs(images["diffusers"] - images["final"]).max() > 0  # step 2 is not the last step

    gone = user_client.post(f"/training/runs/{run.pk}/checkpoints/3/lora/", follow=True)
    assert "No kept checkpoint at step 3" in gone.content.decode()
