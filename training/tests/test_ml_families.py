"""Model families: detection, refusals, single files offline, the shipped configs and the A1111 sampler table."""

from __future__ import annotations

import json
import shutil
import socket

import numpy as np
import pytest

from training.ml.a1111 import A1111_SAMPLERS, a1111_parameters, parse_a1111_parameters, scheduler_from_a1111
from training.ml.errors import ModelNotFound, WrongModelKind
from training.ml.families import (
    UnsupportedModel,
    detect_folder,
    detect_single_file,
    detect_single_file_keys,
    families,
    get_family,
)
from training.ml.generate import SCHEDULERS, generate, scheduler_fits
from training.ml.pipelines import load_pipeline
from training.models import ModelKind

SD_FAMILIES = ("sd15", "sd2", "sdxl")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from training.ml.tiny import build_tiny_pipeline

    root = tmp_path_factory.mktemp("family-models")
    return {kind: build_tiny_pipeline(root / kind, kind=kind) for kind in (*SD_FAMILIES, "flux")}


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test (and the hub is not told to stay offline)."""
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"network access attempted: {address}")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def test_the_registry_and_the_model_choices_agree():
    assert [f.key for f in families()] and sorted(f.key for f in families()) == sorted(ModelKind.values)
    for family in families():
        assert family.native_size in (512, 768, 1024) and family.lora_targets
        assert family.single_file_config or family.notes, "a family without shipped configs says what to do"
    assert get_family("sd2").prediction == "v_prediction" and get_family("flux").prediction == "flow"
    assert get_family("sdxl").cuda_mixed_precision == "bf16" and get_family("sdxl").cuda_gradient_checkpointing
    with pytest.raises(UnsupportedModel, match="Unknown model family 'sd3'"):
        get_family("sd3")


@pytest.mark.slow
def test_each_tiny_folder_is_detected_as_its_family(tiny_models):
    assert {kind: detect_folder(path).key for kind, path in tiny_models.items()} == {
        kind: kind for kind in tiny_models}


@pytest.mark.slow
@pytest.mark.parametrize(("class_name", "named"), [
    ("StableDiffusion3Pipeline", "Stable Diffusion 3 / 3.5"),
    ("StableDiffusionXLImg2ImgPipeline", "Stable Diffusion XL refiner"),
    ("QwenImagePipeline", "Qwen-Image"),
    ("BrandNewPipeline", "BrandNewPipeline pipeline, which is not a family"),
])
def test_other_folders_are_refused_naming_what_they_are(tiny_models, tmp_path, class_name, named):
    folder = tmp_path / "model"
    shutil.copytree(tiny_models["sd15"], folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": class_name}))
    with pytest.raises(UnsupportedModel, match=named):
        detect_folder(folder)


@pytest.mark.parametrize(("keys", "message"), [
    ({"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"}, "Stable Diffusion 3"),
    ({"conditioner.embedders.0.model.text_projection", "model.diffusion_model.input_blocks.0.0.weight"},
     "Stable Diffusion XL refiner"),
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"}, "is a LoRA, not a base model"),
    ({"something.else"}, "its tensor names match none of them"),
])
def test_other_single_files_are_refused_naming_what_they_are(keys, message):
    with pytest.raises(UnsupportedModel, match=message):
        detect_single_file_keys(keys, name="model.safetensors")


def test_single_file_families_from_key_layouts():
    unet = "model.diffusion_model.input_blocks.0.0.weight"
    assert detect_single_file_keys({unet, "cond_stage_model.transformer.text_model.final_layer_norm.weight"}).key == (
        "sd15")
    assert detect_single_file_keys({unet, "cond_stage_model.model.ln_final.weight"}).key == "sd2"
    assert detect_single_file_keys({unet, "conditioner.embedders.1.model.ln_final.weight"}).key == "sdxl"
    assert detect_single_file_keys({"double_blocks.0.img_attn.qkv.weight"}).key == "flux"


def test_a_ckpt_or_a_broken_file_is_refused_without_unpickling(tmp_path):
    (tmp_path / "old.ckpt").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsupportedModel, match="pickle that may run code"):
        detect_single_file(tmp_path / "old.ckpt")
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(UnsupportedModel, match="not a safetensors file"):
        detect_single_file(tmp_path / "bad.safetensors")


def test_the_shipped_configs_build_the_published_architectures():
    """The configs a single file of each family is loaded with give the real models' parameter counts."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from training.ml.families.configs import config_folder

    def count(model):
        return sum(p.numel() for p in model.parameters())

    def build(cls, folder):
        with init_empty_weights():
            if cls in (CLIPTextModel, CLIPTextModelWithProjection):
                return cls(CLIPTextConfig.from_pretrained(folder))
            return cls.from_config(cls.load_config(folder))

    sd15, sd2, sdxl = (config_folder(name) for name in SD_FAMILIES)
    assert count(build(UNet2DConditionModel, sd15 / "unet")) == 859_520_964
    assert count(build(AutoencoderKL, sd15 / "vae")) == 83_653_863
    assert count(build(CLIPTextModel, sd15 / "text_encoder")) == 123_060_480
    assert count(build(UNet2DConditionModel, sd2 / "unet")) == 865_910_724
    assert count(build(UNet2DConditionModel, sdxl / "unet")) == 2_567_463_684
    assert count(build(CLIPTextModelWithProjection, sdxl / "text_encoder_2")) == 694_659_840


def test_the_shipped_tokenizer_is_clips():
    from transformers import CLIPTokenizer

    from training.ml.families.configs import config_folder

    for name in SD_FAMILIES:
        tokenizer = CLIPTokenizer.from_pretrained(config_folder(name) / "tokenizer")
        # The ids every CLIP-L user knows for this prompt.
        assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert CLIPTokenizer.from_pretrained(config_folder("sdxl") / "tokenizer_2").pad_token == "!"


@pytest.mark.slow
@pytest.mark.parametrize("kind", SD_FAMILIES)
def test_a_single_file_in_the_original_layout_loads_offline_and_generates_like_the_folder(
        kind, tiny_models, tmp_path, no_network):
    import torch

    from training.ml.families.original_layout import save_single_file

    folder = load_pipeline(str(tiny_models[kind]), kind=kind, device="cpu")
    checkpoint = save_single_file(folder, kind, tmp_path / f"{kind}.safetensors")
    assert detect_single_file(checkpoint).key == kind
    # The tiny model's architecture is not the published one: its configs go beside the file, without weights.
    shutil.copytree(tiny_models[kind], tmp_path / f"{kind}.config", ignore=shutil.ignore_patterns("*.safetensors"))

    single = load_pipeline(str(checkpoint), kind=kind, source_type="single_file", device="cpu")

    for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if getattr(folder, component, None) is None:
            continue
        ours, theirs = getattr(folder, component).state_dict(), getattr(single, component).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), component
    assert type(single.scheduler).__name__ == type(folder.scheduler).__name__
    assert getattr(single, "safety_checker", None) is None
    params = dict(prompt="a red square", steps=2, width=32, height=32, seed=5, scheduler="euler")
    np.testing.assert_array_equal(np.asarray(generate(folder, **params)[0]), np.asarray(generate(single, **params)[0]))
    assert no_network == []


@pytest.mark.slow
def test_a_published_layout_single_file_uses_the_shipped_configs_without_network(tiny_models, tmp_path, no_network):
    """No sidecar: the SD1.5 configs Imagineer ships are used (the tiny weights do not fit them, which is how we
    know they were the ones read) and nothing is fetched."""
    from training.ml.families.original_layout import save_single_file

    folder = load_pipeline(str(tiny_models["sd15"]), kind="sd15", device="cpu")
    checkpoint = save_single_file(folder, "sd15", tmp_path / "model.safetensors")
    with pytest.raises(ModelNotFound, match=r"as a Stable Diffusion 1.5 checkpoint with the configs in .*sd15-"):
        load_pipeline(str(checkpoint), kind="sd15", source_type="single_file", device="cpu")
    assert no_network == []
    with pytest.raises(WrongModelKind, match="is a Stable Diffusion 1.5 model"):
        load_pipeline(str(checkpoint), kind="sdxl", source_type="single_file", device="cpu")


@pytest.mark.slow
def test_flux_generates_with_its_own_sampler_and_refuses_the_others(tiny_models):
    pipe = load_pipeline(str(tiny_models["flux"]), kind="flux", device="cpu")
    assert type(pipe).__name__ == "FluxPipeline" and pipe.transformer.config.guidance_embeds

    params = dict(prompt="a red square", steps=2, width=32, height=32, seed=5, guidance_scale=3.5)
    first = np.asarray(generate(pipe, scheduler="flow_euler", **params)[0], dtype=np.int16)
    again = np.asarray(generate(pipe, scheduler="flow_euler", **params)[0], dtype=np.int16)
    other = np.asarray(generate(pipe, scheduler="flow_euler", **{**params, "seed": 6})[0], dtype=np.int16)
    assert first.shape == (32, 32, 3) and np.array_equal(first, again) and np.abs(first - other).max() > 0
    with pytest.raises(ValueError, match="does not fit this model"):
        generate(pipe, scheduler="euler_a", **params)
    assert scheduler_fits("flux", "flow_euler") and not scheduler_fits("sd15", "flow_euler")


@pytest.mark.slow
def test_sd2_is_v_prediction(tiny_models):
    pipe = load_pipeline(str(tiny_models["sd2"]), kind="sd2", device="cpu")
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.unet.config.use_linear_projection


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_every_scheduler_round_trips_through_a1111_parameters(scheduler):
    text = a1111_parameters("p", "", 20, scheduler, 7.0, 1, 64, 64)
    sampler, schedule = A1111_SAMPLERS[scheduler]
    assert f"Sampler: {sampler}," in text
    assert (f"Schedule type: {schedule}," in text) == (schedule is not None)
    assert parse_a1111_parameters(text)["scheduler"] == scheduler


@pytest.mark.parametrize(("sampler", "schedule", "ours"), [
    ("DPM++ 2M", "Karras", "dpmpp_2m_karras"),
    ("DPM++ 2M", "Exponential", "dpmpp_2m_exponential"),
    ("DPM++ 2M", None, "dpmpp_2m_karras"),  # A1111 >= 1.9 reads a missing schedule as the sampler's default
    ("DPM++ 2M", "Automatic", "dpmpp_2m_karras"),
    ("DPM++ 2M", "Uniform", "dpmpp_2m"),
    ("DPM++ 2M Karras", None, "dpmpp_2m_karras"),  # A1111 < 1.9
    ("DPM++ 2M SDE", None, "dpmpp_2m_sde_exponential"),
    ("DPM2 a", None, "dpm2_a_karras_unsupported"),
    ("Euler a", None, "euler_a"),
    ("Euler", "Simple", "flow_euler"),
    ("DDIM", "Karras", "ddim"),
    ("DPM++ 3M SDE", "Karras", None),
])
def test_a1111_samplers_map_to_ours_by_a1111s_rules(sampler, schedule, ours):
    if ours == "dpm2_a_karras_unsupported":  # DPM2 a defaults to Karras, which we have no DPM2 a variant of
        ours = None
    assert scheduler_from_a1111(sampler, schedule) == ours


def test_legacy_schedulers_are_not_offered_but_old_jobs_still_validate():
    from training.ml.generate import validate_generation_params

    assert "deis" not in SCHEDULERS and "ddpm" not in SCHEDULERS
    validate_generation_params(prompt="p", scheduler="deis", steps=2, guidance_scale=7, seed=1, width=64, height=64)


@pytest.mark.slow
def test_flux_flow_matching_steps_lower_the_loss_and_export_to_comfys_key_map(tiny_models):
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from training.ml.families import flux_train
    from training.ml.families.flux import TRANSFORMER_ATTENTION

    pipe = load_pipeline(str(tiny_models["flux"]), kind="flux", device="cpu")
    accepted = flux_train.comfy_key_map(pipe.transformer)  # before peft wraps the layers
    for module in (pipe.vae, pipe.text_encoder, pipe.text_encoder_2, pipe.transformer):
        module.requires_grad_(False)
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=2, init_lora_weights="gaussian",
                                            target_modules=list(TRANSFORMER_ATTENTION)))
    params = [p for p in pipe.transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    latents = flux_train.encode_latents(pipe.vae, torch.rand(2, 3, 32, 32) * 2 - 1, torch.Generator().manual_seed(0))
    text = flux_train.encode_text(pipe, ["a red square", "a blue square"], "cpu")
    losses = []
    for _ in range(6):
        batch = flux_train.make_batch(pipe, latents, torch.Generator().manual_seed(1))
        assert batch.guidance is not None and 0 < float(batch.timesteps.min()) < 1
        loss = flux_train.flow_loss(flux_train.predict(pipe, pipe.transformer, batch, text), batch.target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]

    exported = flux_train.to_comfy(get_peft_model_state_dict(pipe.transformer), alpha=2)
    layers = {key.rsplit(".", 2)[0] for key in exported if key.endswith(".weight")}
    assert len(layers) == 11 and layers <= accepted.keys()  # 8 per double block, 3 per single block
    assert {accepted[name].rsplit(".", 1)[-1] for name in layers} >= {"to_q", "add_q_proj", "to_add_out"}
    assert all(float(exported[f"{name}.alpha"]) == 2 for name in layers)


@pytest.mark.slow
def test_flux_previews_img2img_inpainting_and_hires_fix(tiny_models):
    from PIL import Image

    pipe = load_pipeline(str(tiny_models["flux"]), kind="flux", device="cpu")
    params = dict(prompt="a red square", steps=4, width=32, height=32, seed=5, scheduler="flow_euler")
    previews = []
    plain = generate(pipe, **params, on_preview=lambda step, image: previews.append((step, image.size)),
                     preview_every=1)[0]
    assert [step for step, _ in previews] == [1, 2, 3] and all(size == (16, 16) for _, size in previews)

    source = Image.new("RGB", (32, 32), "blue")
    img2img = generate(pipe, **params, mode="img2img", init_image=source, strength=0.5)[0]
    assert img2img.size == (32, 32) and np.asarray(img2img).tobytes() != np.asarray(plain).tobytes()
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 16, 32))  # repaint the left half only
    inpainted = np.asarray(generate(pipe, **params, mode="inpaint", init_image=source, mask_image=mask,
                                    strength=1.0)[0], dtype=np.int16)
    assert np.array_equal(inpainted[:, 16:], np.asarray(source, dtype=np.int16)[:, 16:])
    hires = generate(pipe, **params, hires_scale=2.0, hires_steps=2, hires_strength=0.5)[0]
    assert hires.size == (64, 64)


def test_the_flux_file_layout_matches_diffusers_converter_at_full_size():
    """Names and shapes against diffusers' own BFL converter, on a full-size Flux.1-dev transformer built on the
    meta device (diffusers' converter assumes the published widths, so it cannot read the tiny one)."""
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from training.ml.families.flux_layout import from_bfl, to_bfl

    with init_empty_weights():
        model = FluxTransformer2DModel(guidance_embeds=True)
    ours = model.state_dict()
    bfl = to_bfl(ours, model.config)
    assert "double_blocks.18.img_attn.qkv.weight" in bfl and "single_blocks.37.linear1.weight" in bfl
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(bfl))
    assert theirs.keys() == ours.keys() and all(theirs[k].shape == ours[k].shape for k in ours)
    assert from_bfl(bfl, model.config).keys() == ours.keys()


@pytest.mark.slow
def test_a_flux_transformer_file_loads_offline_with_the_rest_of_the_pipeline_beside_it(
        tiny_models, tmp_path, no_network):
    import torch
    from safetensors.torch import save_file

    from training.ml.families.flux_layout import to_bfl

    folder = load_pipeline(str(tiny_models["flux"]), kind="flux", device="cpu")
    transformer = folder.transformer
    checkpoint = tmp_path / "flux1-tiny.safetensors"
    bfl = to_bfl(transformer.state_dict(), transformer.config)
    prefixed = {f"model.diffusion_model.{k}": v for k, v in bfl.items()}
    save_file(prefixed, str(checkpoint))
    assert detect_single_file(checkpoint).key == "flux"
    with pytest.raises(ModelNotFound, match="Single Flux files hold only the transformer"):
        load_pipeline(str(checkpoint), kind="flux", source_type="single_file", device="cpu")
    # The rest of the pipeline beside it, without the transformer's weights.
    shutil.copytree(tiny_models["flux"], tmp_path / "flux1-tiny.config",
                    ignore=lambda where, names: [n for n in names if where.endswith("transformer") and
                                                 n.endswith(".safetensors")])

    single = load_pipeline(str(checkpoint), kind="flux", source_type="single_file", device="cpu")

    ours, theirs = transformer.state_dict(), single.transformer.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    params = dict(prompt="a red square", steps=2, width=32, height=32, seed=5, scheduler="flow_euler")
    np.testing.assert_array_equal(np.asarray(generate(folder, **params)[0]), np.asarray(generate(single, **params)[0]))
    assert no_network == []
