"""Model families through the product: registration reports the family, single files and Flux generate through
the queue with PNG metadata A1111 reads, SD2 and Flux train, and options a family cannot use are refused."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from imagineer.models import JobStatus
from training.generation.services import GenerationInputError, generation_create
from training.ml.a1111 import parse_a1111_parameters, read_png_parameters
from training.models import BaseModel, GenerationJob
from training.tests.generation_fixtures import file_bytes

pytestmark = pytest.mark.slow


def _call(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture(scope="module")
def sd2_single_file(tmp_path_factory):
    """A tiny SD2 model as one checkpoint in the original layout, with its configs beside it."""
    from training.ml.families.original_layout import save_single_file
    from training.ml.pipelines import load_pipeline
    from training.ml.tiny import build_tiny_pipeline

    root = tmp_path_factory.mktemp("sd2")
    folder = build_tiny_pipeline(root / "folder", kind="sd2")
    checkpoint = save_single_file(load_pipeline(str(folder), kind="sd2", device="cpu"), "sd2",
                                  root / "my-sd2.safetensors")
    shutil.copytree(folder, root / "my-sd2.config", ignore=shutil.ignore_patterns("*.safetensors"))
    return checkpoint


def _image(job):
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    return job.outputs.get().image


def test_a_single_file_is_registered_with_its_family_stored_and_generates(
        sd2_single_file, training_dirs, user, run_worker):
    output = _call("register_model", "my-sd2", str(sd2_single_file), "--upload")

    assert "Detected family: Stable Diffusion 2.x (sd2)." in output
    model = BaseModel.objects.get(name="my-sd2")
    assert (model.kind, model.source_type) == ("sd2", "stored")
    job = generation_create(user=user, prompt="a red square", base_model="my-sd2", width=32, height=32, steps=2,
                            scheduler="dpmpp_2m_karras", seed=3)
    run_worker("generate")

    params = parse_a1111_parameters(read_png_parameters(file_bytes(_image(job))))
    assert (params["sampler"], params["schedule_type"], params["scheduler"]) == ("DPM++ 2M", "Karras",
                                                                                "dpmpp_2m_karras")
    assert (params["model"], params["seed"]) == ("my-sd2", 3)


def test_registration_refuses_other_families_and_flux_single_files(db, training_dirs, tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": torch.zeros(2)},
              str(tmp_path / "sd35.safetensors"))
    with pytest.raises(CommandError, match="Stable Diffusion 3 / 3.5, which Imagineer does not support"):
        _call("register_model", "sd35", str(tmp_path / "sd35.safetensors"), "--upload")
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(2)}, str(tmp_path / "flux1-dev.safetensors"))
    with pytest.raises(CommandError, match="is a Flux.1 checkpoint. Single Flux files hold only the transformer"):
        _call("register_model", "flux-file", str(tmp_path / "flux1-dev.safetensors"), "--upload")
    (tmp_path / "old.ckpt").write_bytes(b"pickle")
    with pytest.raises(CommandError, match="a pickle, which can run code"):
        _call("register_model", "old", str(tmp_path / "old.ckpt"), "--upload")
    assert not BaseModel.objects.exists()


def test_flux_builds_registers_and_generates_with_its_sampler(training_dirs, user, run_worker, run_album):
    from training.models import TrainingRun
    from training.runs.params import RunInputError
    from training.runs.services import run_create

    output = _call("build_tiny_model", "--family", "flux")
    model = BaseModel.objects.get(name="tiny-flux")
    assert "Built base model 'tiny-flux'" in output and model.kind == "flux" and not model.is_default

    with pytest.raises(GenerationInputError, match="does not fit tiny-flux"):
        generation_create(user=user, prompt="p", base_model="tiny-flux", scheduler="dpmpp_2m")
    job = generation_create(user=user, prompt="a red square", base_model="tiny-flux", width=32, height=32, steps=2,
                            guidance_scale=3.5, seed=9)
    assert job.scheduler == "flow_euler"
    run_worker("generate")
    image = _image(job)
    params = parse_a1111_parameters(read_png_parameters(file_bytes(image)))
    assert (params["sampler"], params["schedule_type"], params["scheduler"]) == ("Euler", "Simple", "flow_euler")
    assert (image.width, image.height) == (32, 32)

    album, _ = run_album
    with pytest.raises(RunInputError) as refused:
        run_create(owner=user, album_ids=[album.pk], params={"steps": 2, "lora_modules": "kohya",
                                                             "min_snr_gamma": 5}, base_model=model, enqueue=False)
    assert set(refused.value.errors) == {"lora_modules", "min_snr_gamma"}
    assert GenerationJob.objects.count() == 1 and not TrainingRun.objects.exists()

    output = _call("train_lora", "--album", album.name, "--base-model", "tiny-flux", "--steps", "2",
                   "--resolution", "32", "--inline")
    run = TrainingRun.objects.get()
    assert run.status == JobStatus.SUCCEEDED, run.error
    assert run.lora.base_model == model and "trained" in output.lower()


def test_flux_trains_a_flow_matching_lora_that_resumes_exports_for_comfy_and_changes_images(
        tmp_path, tiny_dataset, train_config):
    from safetensors import safe_open

    from training.ml.families.flux_train import comfy_key_map
    from training.ml.generate import generate
    from training.ml.pipelines import LoraSpec, apply_loras, load_pipeline
    from training.ml.tiny import build_tiny_pipeline
    from training.ml.train import train_lora

    folder = build_tiny_pipeline(tmp_path / "flux", kind="flux")
    config = dict(steps=2, checkpoint_every=2, sample_every=2, sample_prompts=["a red square"], sample_steps=2,
                  caption_dropout=0.0, learning_rate=5e-2)
    first = train_lora(base_model=str(folder), kind="flux", dataset=tiny_dataset, output_dir=tmp_path / "run",
                       config=train_config(**config), name="flux_style", device="cpu")
    assert first.final_step == 2 and first.checkpoints
    more = train_lora(base_model=str(folder), kind="flux", dataset=tiny_dataset, output_dir=tmp_path / "run",
                      config=train_config(**{**config, "steps": 3}), name="flux_style", device="cpu")
    assert more.resumed_from == 2 and more.final_step == 3 and len(more.loss_history) == 3
    assert (tmp_path / "run" / "samples").is_dir()

    pipe = load_pipeline(str(folder), kind="flux", device="cpu")
    accepted = comfy_key_map(pipe.transformer)
    with safe_open(str(more.kohya_path), "pt") as handle:
        assert handle.metadata()["ss_base_model_version"] == "flux1"
        layers = {key.rsplit(".", 2)[0] for key in handle.keys() if key.endswith(".weight")}
    assert layers and layers <= accepted.keys()
    params = dict(prompt="a red square", steps=2, width=32, height=32, seed=1, scheduler="flow_euler")
    before = np.asarray(generate(pipe, **params)[0], dtype=np.int16)
    apply_loras(pipe, [LoraSpec("flux_style", more.lora_path, 1.0)])
    after = np.asarray(generate(pipe, **params)[0], dtype=np.int16)
    assert np.abs(after - before).max() > 0


def test_sd2_trains_a_v_prediction_lora_that_exports_as_sd_v2(tmp_path, tiny_dataset, train_config):
    from safetensors import safe_open

    from training.ml.generate import generate
    from training.ml.pipelines import LoraSpec, apply_loras, load_pipeline
    from training.ml.tiny import build_tiny_pipeline
    from training.ml.train import train_lora

    folder = build_tiny_pipeline(tmp_path / "sd2", kind="sd2")
    result = train_lora(base_model=str(folder), kind="sd2", dataset=tiny_dataset, output_dir=tmp_path / "run",
                        config=train_config(steps=3, checkpoint_every=3, sample_every=0), name="sd2_style",
                        device="cpu")

    with safe_open(str(result.kohya_path), "pt") as handle:
        assert handle.metadata()["ss_base_model_version"] == "sd_v2"
    pipe = load_pipeline(str(folder), kind="sd2", device="cpu")
    params = dict(prompt="a red square", steps=2, width=32, height=32, seed=1, scheduler="ddim")
    before = np.asarray(generate(pipe, **params)[0], dtype=np.int16)
    apply_loras(pipe, [LoraSpec("sd2_style", result.kohya_path, 1.0)])
    after = np.asarray(generate(pipe, **params)[0], dtype=np.int16)
    assert np.abs(after - before).max() > 0


@pytest.mark.django_db
def test_sdxl_and_flux_runs_default_to_bf16_and_gradient_checkpointing():
    from training.runs.forms import RunForm
    from training.runs.params import clean_params

    for kind, expected in (("sd15", ("no", False)), ("sd2", ("no", False)), ("sdxl", ("bf16", True)),
                           ("flux", ("bf16", True))):
        cleaned = clean_params({"steps": 10}, kind=kind, image_count=4)
        assert (cleaned["mixed_precision"], cleaned["gradient_checkpointing"]) == expected, kind
        BaseModel.objects.update(is_default=False)
        BaseModel.objects.create(name=f"m-{kind}", kind=kind, source=f"base/{kind}", source_type="folder",
                                 is_default=True)
        form = RunForm(base_models=BaseModel.objects.all())
        assert (form.fields["mixed_precision"].initial, form.fields["gradient_checkpointing"].initial) == expected
    # An explicit choice is kept.
    assert clean_params({"steps": 10, "mixed_precision": "fp16"}, kind="sdxl", image_count=4)[
        "mixed_precision"] == "fp16"


def test_a_flux_transformer_file_with_its_pipeline_beside_it_registers_and_generates(
        training_dirs, user, run_worker, tmp_path):
    from safetensors.torch import save_file

    from training.ml.families.flux_layout import to_bfl
    from training.ml.pipelines import load_pipeline
    from training.ml.tiny import build_tiny_pipeline

    folder = build_tiny_pipeline(tmp_path / "flux-folder", kind="flux")
    transformer = load_pipeline(str(folder), kind="flux", device="cpu").transformer
    save_file(to_bfl(transformer.state_dict(), transformer.config), str(tmp_path / "my-flux.safetensors"))
    shutil.copytree(folder, tmp_path / "my-flux.config",
                    ignore=lambda where, names: [n for n in names if where.endswith("transformer") and
                                                 n.endswith(".safetensors")])

    output = _call("register_model", "my-flux", str(tmp_path / "my-flux.safetensors"), "--upload")
    assert "Detected family: Flux.1 (flux)." in output
    job = generation_create(user=user, prompt="a red square", base_model="my-flux", width=32, height=32, steps=2,
                            seed=4)
    run_worker("generate")
    params = parse_a1111_parameters(read_png_parameters(file_bytes(_image(job))))
    assert (params["model"], params["scheduler"]) == ("my-flux", "flow_euler")
