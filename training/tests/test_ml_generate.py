"""Generation on the tiny model: reproducibility, schedulers, cancel, validation, A1111 parameters."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from training.ml.errors import GenerationCancelled
from training.ml.generate import (
    SCHEDULERS,
    a1111_parameters,
    generate,
    parse_a1111_parameters,
    png_bytes_with_parameters,
    read_png_parameters,
    validate_generation_params,
)
from training.ml.pipelines import apply_loras

PARAMS = dict(prompt="a red square", steps=3, width=32, height=32, scheduler="euler")


@pytest.fixture
def pipe(tiny_pipe):
    apply_loras(tiny_pipe, [])
    return tiny_pipe


def _pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_the_same_seed_gives_the_same_image_and_another_seed_does_not(pipe):
    first = generate(pipe, **PARAMS, seed=42)[0]
    again = generate(pipe, **PARAMS, seed=42)[0]
    other = generate(pipe, **PARAMS, seed=43)[0]

    assert first.size == (32, 32)
    assert first.tobytes() == again.tobytes()
    assert np.abs(_pixels(first) - _pixels(other)).max() > 8


def test_image_n_of_a_batch_is_the_image_of_seed_plus_n(pipe):
    batch = generate(pipe, **{**PARAMS, "width": 40, "height": 24}, seed=7, count=2)
    second_alone = generate(pipe, **{**PARAMS, "width": 40, "height": 24}, seed=8)[0]

    assert [im.size for im in batch] == [(40, 24), (40, 24)]
    assert np.abs(_pixels(batch[1]) - _pixels(second_alone)).max() <= 2


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_generates(pipe, name):
    if name == "flow_euler":  # flow-matching models only (test_ml_families generates Flux with it)
        with pytest.raises(ValueError, match="does not fit this model"):
            generate(pipe, **{**PARAMS, "scheduler": name, "steps": 2}, seed=1)
        return
    image = generate(pipe, **{**PARAMS, "scheduler": name, "steps": 2}, seed=1)[0]

    assert type(pipe.scheduler).__name__ == SCHEDULERS[name].class_name
    assert image.size == (32, 32) and _pixels(image).std() > 0


def test_switching_schedulers_does_not_leak_options(pipe):
    generate(pipe, **{**PARAMS, "scheduler": "dpmpp_2m_karras"}, seed=1)
    assert pipe.scheduler.config.use_karras_sigmas is True
    generate(pipe, **{**PARAMS, "scheduler": "dpmpp_2m"}, seed=1)
    assert pipe.scheduler.config.use_karras_sigmas is False
    generate(pipe, **{**PARAMS, "scheduler": "dpmpp_2m_sde"}, seed=1)
    generate(pipe, **{**PARAMS, "scheduler": "dpmpp_2m"}, seed=1)
    assert pipe.scheduler.config.algorithm_type == "dpmsolver++"


def test_progress_is_reported_and_cancel_stops_between_steps(pipe):
    seen = []
    with pytest.raises(GenerationCancelled) as cancelled:
        generate(
            pipe,
            **{**PARAMS, "steps": 6},
            seed=1,
            on_step=lambda s, t: seen.append((s, t)),
            should_stop=lambda: len(seen) >= 2,
        )

    assert seen == [(1, 6), (2, 6)]
    assert (cancelled.value.step, cancelled.value.total) == (2, 6)
    done = []
    generate(pipe, **{**PARAMS, "steps": 4}, seed=1, on_step=lambda s, t: done.append(s))
    assert done == [1, 2, 3, 4]


def test_a_cancel_before_the_start_runs_no_step(pipe):
    with pytest.raises(GenerationCancelled, match="step 0"):
        generate(pipe, **PARAMS, seed=1, should_stop=lambda: True)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"width": 30}, "width must be a multiple of 8"),
        ({"height": 4096}, "height must be a multiple of 8 between 8 and 2048"),
        ({"steps": 0}, "steps must be between 1 and 150"),
        ({"steps": 151}, "steps must be between 1 and 150"),
        ({"count": 9}, "count must be between 1 and 8"),
        ({"guidance_scale": 31}, "guidance scale must be between 0 and 30"),
        ({"prompt": "   "}, "the prompt is empty"),
        ({"scheduler": "k_fancy"}, "unknown scheduler 'k_fancy'"),
        ({"seed": -1}, "seed must be between 0"),
    ],
)
def test_invalid_generation_settings_are_explained(overrides, message):
    params = dict(
        prompt="a cat", scheduler="euler_a", steps=20, guidance_scale=7.0, seed=1, width=512, height=512, count=1
    )
    with pytest.raises(ValueError, match=message):
        validate_generation_params(**{**params, **overrides})


def test_limits_can_be_tightened():
    with pytest.raises(ValueError, match="count must be between 1 and 2"):
        validate_generation_params(
            prompt="a", scheduler="ddim", steps=1, guidance_scale=1, seed=0, width=64, height=64, count=3, max_count=2
        )


def test_parameters_text_matches_a1111_and_round_trips():
    text = a1111_parameters(
        "a red fox, forest",
        "blurry, lowres",
        30,
        "dpmpp_2m_karras",
        7.0,
        1234,
        512,
        768,
        "tiny-sd15",
        "0123456789",
        [("fox_style", 0.8), ("light", 1.0)],
        lora_hashes={"fox_style": "aaaaaaaaaaaa", "light": "bbbbbbbbbbbb"},
    )

    assert text.splitlines() == [
        "a red fox, forest <lora:fox_style:0.8> <lora:light:1>",
        "Negative prompt: blurry, lowres",
        "Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, "
        "Model hash: 0123456789, "
        'Model: tiny-sd15, Lora hashes: "fox_style: aaaaaaaaaaaa, light: bbbbbbbbbbbb", Version: Imagineer',
    ]
    parsed = parse_a1111_parameters(text)
    assert parsed["prompt"] == "a red fox, forest"
    assert parsed["negative_prompt"] == "blurry, lowres"
    assert parsed["loras"] == [("fox_style", 0.8), ("light", 1.0)]
    assert (parsed["steps"], parsed["sampler"], parsed["schedule_type"], parsed["scheduler"]) == (
        30, "DPM++ 2M", "Karras", "dpmpp_2m_karras")
    assert (parsed["cfg_scale"], parsed["seed"], parsed["width"], parsed["height"]) == (7.0, 1234, 512, 768)
    assert (parsed["model"], parsed["model_hash"]) == ("tiny-sd15", "0123456789")
    assert parsed["lora_hashes"] == {"fox_style": "aaaaaaaaaaaa", "light": "bbbbbbbbbbbb"}


def test_parsing_real_a1111_variants():
    newer = (
        "masterpiece, 1girl\nsecond line\nNegative prompt: bad hands\nmore negative\n"
        "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 99, Size: 768x512, "
        "Model: anything, Version: v1.10.1"
    )
    parsed = parse_a1111_parameters(newer)
    assert parsed["prompt"] == "masterpiece, 1girl\nsecond line"
    assert parsed["negative_prompt"] == "bad hands\nmore negative"
    assert parsed["scheduler"] == "dpmpp_2m_karras" and parsed["cfg_scale"] == 6.5
    assert parse_a1111_parameters("just a prompt") == {
        "raw_prompt": "just a prompt",
        "prompt": "just a prompt",
        "negative_prompt": "",
        "loras": [],
        "fields": {},
    }


def test_png_carries_the_parameters(pipe):
    image = generate(pipe, **PARAMS, seed=5)[0]
    text = a1111_parameters("a red square", "", 3, "euler", 7.5, 5, 32, 32, "tiny", "", [])

    data = png_bytes_with_parameters(image, text)

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_png_parameters(data) == text
    assert parse_a1111_parameters(read_png_parameters(data))["seed"] == 5
    import io

    assert Image.open(io.BytesIO(data)).tobytes() == image.tobytes()


def test_malformed_or_hostile_parameters_do_not_break_parsing():
    import time

    parsed = parse_a1111_parameters("a cat\nSteps: many, Seed: none, Size: huge, CFG scale: lots, Sampler: Magic")
    assert parsed["prompt"] == "a cat" and parsed["fields"]["Steps"] == "many"
    assert "steps" not in parsed and "seed" not in parsed and "width" not in parsed
    assert parsed["scheduler"] is None
    started = time.perf_counter()
    parse_a1111_parameters("x\n" + "a" * 200_000 + ", b: c" * 3)
    assert time.perf_counter() - started < 2


def test_hashes_follow_a1111(tmp_path):
    import hashlib

    import torch
    from safetensors.torch import save_file

    from training.ml.a1111 import lora_hash, model_hash

    tensors = {"w": torch.arange(6, dtype=torch.float32)}
    save_file(tensors, str(tmp_path / "a.safetensors"), metadata={"note": "one"})
    save_file(tensors, str(tmp_path / "b.safetensors"), metadata={"note": "two, longer"})

    data = (tmp_path / "a.safetensors").read_bytes()
    assert model_hash(tmp_path / "a.safetensors") == hashlib.sha256(data).hexdigest()[:10]
    assert len(lora_hash(tmp_path / "a.safetensors")) == 12
    assert lora_hash(tmp_path / "a.safetensors") == lora_hash(tmp_path / "b.safetensors")
    assert model_hash(tmp_path / "a.safetensors") != model_hash(tmp_path / "b.safetensors")
