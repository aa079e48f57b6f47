"""Cached latents and text embeddings train the same LoRA as the live encoders, and are actually reused."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from training.ml.latent_cache import EncoderCache
from training.ml.train import TrainConfig, train_lora

from .conftest import Recorder

pytestmark = pytest.mark.slow


def _train(tmp_path, tiny_model, tiny_dataset, name, **options):
    recorder = Recorder()
    # Six steps over four images at batch 2 is one and a half epochs: later steps meet cached entries.
    config = TrainConfig(**{**dict(steps=6, batch_size=2, learning_rate=2e-2, rank=4, alpha=2.0, resolution=32,
                                   seed=9, random_flip=True, caption_dropout=0.25, checkpoint_every=0), **options})
    result = train_lora(base_model=str(tiny_model), kind="sd15", dataset=tiny_dataset, output_dir=tmp_path / name,
                        config=config, callbacks=recorder.callbacks(), device="cpu")
    with safe_open(str(result.lora_path), framework="pt") as handle:
        weights = {k: handle.get_tensor(k) for k in handle.keys()}
    return result, weights, recorder.logs


@pytest.mark.parametrize("crop", ["center", "random"])
def test_cached_and_live_training_give_the_same_lora(tmp_path, tiny_model, tiny_dataset, crop):
    centre = crop == "center"
    cached, cached_weights, logs = _train(tmp_path, tiny_model, tiny_dataset, "cached", center_crop=centre)
    live, live_weights, live_logs = _train(tmp_path, tiny_model, tiny_dataset, "live", center_crop=centre,
                                           cache=False)

    # The VAE sample, noise and timesteps come from the same generator draws; only float rounding of
    # batching the encoders differently may differ.
    assert cached.loss_history == pytest.approx(live.loss_history, rel=1e-4, abs=1e-6)
    assert cached_weights.keys() == live_weights.keys()
    diffs = {k: float((cached_weights[k] - live_weights[k]).abs().max() / live_weights[k].abs().max())
             for k in cached_weights}
    # Adam divides by the gradient's running size, so rounding-level gradient differences grow a little.
    assert max(diffs.values()) < 1e-2 and sorted(diffs.values())[len(diffs) // 2] < 1e-4
    [line] = [line for line in logs if line.startswith("encoder cache:")]
    stats = dict(part.rsplit(" ", 1) for part in line.removeprefix("encoder cache: ").split(", "))
    if centre:  # four images, each in two flips at most: later steps hit
        assert int(stats["latent_hits"]) > 0 and int(stats["latent_misses"]) <= 8
    assert int(stats["text_hits"]) > 0
    assert not any(line.startswith("encoder cache:") for line in live_logs)


def test_training_the_text_encoder_falls_back_to_live_text_embeddings(tmp_path, tiny_model, tiny_dataset):
    _, _, logs = _train(tmp_path, tiny_model, tiny_dataset, "te", steps=2, center_crop=True,
                        train_text_encoder=True)
    [line] = [line for line in logs if line.startswith("encoder cache:")]
    assert "latent_misses" in line and "text_" not in line


def test_the_cache_keeps_entries_per_scope_and_encodes_only_misses():
    cache = EncoderCache(scope=("snapshot", 32), latents=True, texts=True)
    calls = []

    def encode(indices):
        calls.append(list(indices))
        values = torch.tensor([[float(i)] for i in indices])
        return values, values * 10

    mean, std = cache.latent_params(["a", "b"], encode)
    mean2, std2 = cache.latent_params(["b", "c"], encode)
    assert calls == [[0, 1], [1]]  # only "c" (index 1 of the second batch) was encoded again
    assert mean2[0].item() == mean[1].item() and std2[1].item() == 10.0
    texts = []

    def encode_text(captions):
        texts.append(captions)
        return (torch.tensor([[len(c)] for c in captions]),)

    out = cache.text(["x", "y", "x"], encode_text)
    assert texts == [["x", "y"]] and out[0].shape == (3, 1)
    other = EncoderCache(scope=("other", 32), latents=True, texts=True)
    other.latents.items.update(cache.latents.items)  # a different snapshot never reads these entries
    other.latent_params(["a"], encode)
    assert calls[-1] == [0]
