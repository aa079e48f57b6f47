"""Each trainer option reaches the loop: a changed loss, or a changed set of trained modules, on the tiny model."""

from __future__ import annotations

import random
import re

import pytest
import torch
from safetensors import safe_open

from training.ml.data import CaptionOptions, shape_caption
from training.ml.train import TrainConfig, train_lora

pytestmark = pytest.mark.slow

# Two steps at batch 1: step 1 shows what changes the loss itself, step 2 what changes the update.
BASE = dict(steps=2, batch_size=1, learning_rate=5e-2, rank=4, alpha=4.0, resolution=32, seed=3,
            random_flip=False, center_crop=True, checkpoint_every=0)


def _run(tmp_path, tiny_model, tiny_dataset, name="run", dataset=None, **options):
    config = TrainConfig(**{**BASE, **options})
    return train_lora(base_model=str(tiny_model), kind="sd15", dataset=dataset or tiny_dataset[:2],
                      output_dir=tmp_path / name, config=config, name="opt", device="cpu")


def _kohya_modules(path) -> set[str]:
    with safe_open(str(path), framework="pt") as handle:
        return {key.split(".")[0] for key in handle.keys()}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, tiny_model, tiny_dataset):
    return _run(tmp_path_factory.mktemp("base"), tiny_model, tiny_dataset)


@pytest.mark.parametrize("option", [
    {"min_snr_gamma": 1e-4}, {"noise_offset": 0.5}, {"clip_skip": 2}, {"trigger_word": "zqx"},
])
def test_options_that_change_the_first_loss(tmp_path, tiny_model, tiny_dataset, baseline, option):
    result = _run(tmp_path, tiny_model, tiny_dataset, **option)
    assert result.loss_history[0] != pytest.approx(baseline.loss_history[0], rel=1e-6)


@pytest.mark.parametrize("option", [
    {"optimizer": "adafactor"}, {"optimizer": "prodigy", "learning_rate": 1.0}, {"weight_decay": 0.9},
    {"max_grad_norm": 1e-4}, {"lr_warmup_steps": 5}, {"gradient_accumulation": 2},
])
def test_options_that_change_the_update(tmp_path, tiny_model, tiny_dataset, baseline, option):
    result = _run(tmp_path, tiny_model, tiny_dataset, **option)
    if "gradient_accumulation" not in option:  # accumulation averages two micro-batches into the first step
        assert result.loss_history[0] == pytest.approx(baseline.loss_history[0], rel=1e-5)
    assert result.loss_history[1] != pytest.approx(baseline.loss_history[1], rel=1e-6)


def test_the_lr_scheduler_sets_each_steps_learning_rate(tmp_path, tiny_model, tiny_dataset):
    from training.ml.train import TrainCallbacks

    rates = []
    config = TrainConfig(**{**BASE, "steps": 3, "lr_scheduler": "linear"})
    train_lora(base_model=str(tiny_model), kind="sd15", dataset=tiny_dataset[:1], output_dir=tmp_path / "lin",
               config=config, callbacks=TrainCallbacks(on_step=lambda *args: rates.append(args[3])), device="cpu")
    assert rates == pytest.approx([5e-2 * 2 / 3, 5e-2 / 3, 0.0])


def test_module_sets_train_kohyas_layers_and_convolutions(tmp_path, tiny_model, tiny_dataset, baseline):
    attention = _kohya_modules(baseline.kohya_path)
    kohya = _kohya_modules(_run(tmp_path, tiny_model, tiny_dataset, "kohya", steps=1, lora_modules="kohya").kohya_path)
    locon = _kohya_modules(_run(tmp_path, tiny_model, tiny_dataset, "locon", steps=1, lora_modules="locon").kohya_path)

    assert all(m.rsplit("_", 1)[-1] in {"q", "k", "v", "0"} for m in attention)
    assert attention < kohya < locon
    kinds = {re.sub(r".*_(ff_net_0_proj|ff_net_2|proj_in|proj_out)$", r"\1", m) for m in kohya - attention}
    assert kinds == {"ff_net_0_proj", "ff_net_2", "proj_in", "proj_out"}
    extra = locon - kohya
    assert any("_resnets_" in m and m.endswith("conv1") for m in extra)
    assert any(m.endswith("downsamplers_0_conv") for m in extra) and any(m.endswith("upsamplers_0_conv") for m in extra)
    assert not any("attentions" in m for m in extra)


def test_text_encoder_lora_trains_with_its_own_learning_rate(tmp_path, tiny_model, tiny_dataset, baseline):
    slow = _run(tmp_path, tiny_model, tiny_dataset, "slow", train_text_encoder=True, text_encoder_lr=1e-6)
    fast = _run(tmp_path, tiny_model, tiny_dataset, "fast", train_text_encoder=True, text_encoder_lr=5e-1)

    modules = _kohya_modules(fast.kohya_path)
    assert any(m.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj") for m in modules)
    assert any(m.startswith("lora_te_text_model_encoder_layers_0_mlp_fc1") for m in modules)
    assert not any(m.startswith("lora_te") for m in _kohya_modules(baseline.kohya_path))
    assert slow.loss_history[0] == pytest.approx(fast.loss_history[0], rel=1e-6)
    assert slow.loss_history[1] != pytest.approx(fast.loss_history[1], rel=1e-6)
    with safe_open(str(fast.lora_path), framework="pt") as handle:
        assert any(k.startswith("text_encoder.") for k in handle.keys())


def test_tag_shuffle_changes_the_loss_and_keeps_the_first_tags(tmp_path, tiny_model, tiny_dataset, baseline):
    tagged = [(path, "one, two, three, four, five, six") for path, _ in tiny_dataset[:2]]
    plain = _run(tmp_path, tiny_model, tiny_dataset, "plain", dataset=tagged, steps=1)
    shuffled = _run(tmp_path, tiny_model, tiny_dataset, "shuffled", dataset=tagged, steps=1, shuffle_tags=True)
    assert plain.loss_history[0] != pytest.approx(shuffled.loss_history[0], rel=1e-6)

    options = CaptionOptions(trigger_word="zqx", shuffle_tags=True, keep_tags=2)
    captions = {shape_caption("one, two, three, four, five", random.Random(s), options) for s in range(20)}
    assert len(captions) > 3
    assert all(c.startswith("zqx, one, two, ") for c in captions)
    assert shape_caption("zqx, a cat", random.Random(0), CaptionOptions(trigger_word="zqx")) == "zqx, a cat"
    assert shape_caption("", random.Random(0), CaptionOptions(trigger_word="zqx")) == "zqx"


def test_adamw_8bit_is_refused_clearly_without_cuda(tmp_path, tiny_model, tiny_dataset):
    with pytest.raises(ValueError, match="8-bit optimizer needs a CUDA GPU"):
        _run(tmp_path, tiny_model, tiny_dataset, optimizer="adamw8bit")


@pytest.mark.parametrize(("option", "message"), [
    ({"optimizer": "lion"}, "optimizer must be one of"),
    ({"lora_modules": "everything"}, "lora_modules must be one of"),
    ({"optimizer": "prodigy", "text_encoder_lr": 1e-5}, "Prodigy adapts one step size"),
    ({"clip_skip": 0}, "clip_skip must be between 1 and 12"),
    ({"noise_offset": -0.1}, "noise_offset must be between 0 and 1"),
    ({"trigger_word": "a, b"}, "trigger_word must not contain a comma"),
])
def test_bad_options_are_refused_by_name(option, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{**BASE, **option})


def test_min_snr_weights_follow_the_formula():
    from diffusers import DDPMScheduler

    from training.ml.optim import min_snr_weights

    scheduler = DDPMScheduler(num_train_timesteps=1000)
    timesteps = torch.tensor([0, 500, 999])
    alphas = scheduler.alphas_cumprod[timesteps]
    snr = alphas / (1 - alphas)
    weights = min_snr_weights(scheduler, timesteps, 5.0, "epsilon")
    assert torch.allclose(weights, torch.clamp(snr, max=5.0) / snr)
    assert weights[0] < 1 and weights[2] == pytest.approx(1.0)


def test_a_run_with_a_text_encoder_lora_resumes_where_it_stopped(tmp_path, tiny_model, tiny_dataset):
    from training.ml.errors import TrainingCancelled

    from .conftest import Recorder

    options = dict(steps=3, checkpoint_every=1, train_text_encoder=True, text_encoder_lr=1e-2, lora_modules="kohya")
    whole = _run(tmp_path, tiny_model, tiny_dataset, "whole", **options)
    config = TrainConfig(**{**BASE, **options})
    common = dict(base_model=str(tiny_model), kind="sd15", dataset=tiny_dataset[:2], output_dir=tmp_path / "parts",
                  config=config, name="opt", device="cpu")
    with pytest.raises(TrainingCancelled):
        train_lora(**common, callbacks=Recorder(stop_after=1).callbacks())
    resumed = train_lora(**common)

    assert resumed.resumed_from == 1
    assert resumed.loss_history == pytest.approx(whole.loss_history, rel=1e-5)
