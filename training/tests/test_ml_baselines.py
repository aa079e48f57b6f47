"""The bare diffusers+peft baselines the benchmarks compare against run on the tiny model."""

from __future__ import annotations

import pytest

from bench.ml_baselines import bare_generation_seconds, bare_training_steps_per_second

pytestmark = pytest.mark.slow


def test_bare_training_and_generation_baselines_measure_something(tiny_model, tiny_dataset):
    steps_per_second = bare_training_steps_per_second(tiny_model, tiny_dataset, batch_size=2, steps=2, resolution=32)
    seconds = bare_generation_seconds(tiny_model, "a red square", steps=2, width=32, height=32)

    assert steps_per_second > 0
    assert 0 < seconds < 30
