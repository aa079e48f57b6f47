"""Several users' requests in one denoising pass: each gets the image it gets alone; cancel leaves the others."""

from __future__ import annotations

import numpy as np
import pytest

from training.ml.batching import BatchItem, generate_batch
from training.ml.generate import generate
from training.ml.pipelines import apply_loras

SETTINGS = dict(steps=3, width=32, height=32, scheduler="euler_a", guidance_scale=7.0)


@pytest.fixture
def pipe(tiny_pipe):
    apply_loras(tiny_pipe, [])
    return tiny_pipe


def _alone(pipe, item):
    return generate(pipe, prompt=item.prompt, negative_prompt=item.negative_prompt, seed=item.seed, count=item.count,
                    **SETTINGS)


def _same(a, b) -> bool:
    return np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max() <= 2


def test_every_batched_request_gets_the_image_it_gets_alone(pipe):
    items = [BatchItem("alice's (red:1.3) square", 5), BatchItem("bob's blue circle", 90, "blurry", count=2),
             BatchItem("carol's green [triangle]", 7)]
    steps = []
    batched = generate_batch(pipe, items, **SETTINGS, on_step=lambda s, t: steps.append(s))

    assert steps == [1, 2, 3]  # one pass for all four images
    for item, images in zip(items, batched, strict=True):
        alone = _alone(pipe, item)
        assert len(images) == item.count == len(alone)
        assert all(_same(a, b) for a, b in zip(images, alone, strict=True)), item.prompt
    assert not _same(batched[0][0], batched[2][0])


def test_cancelling_one_request_leaves_the_others(pipe):
    checks = {"n": 0}

    def stop_after_first_step():
        checks["n"] += 1
        return checks["n"] > 1

    items = [BatchItem("a red square", 1), BatchItem("to be cancelled", 2, should_stop=stop_after_first_step),
             BatchItem("a blue square", 3)]
    results = generate_batch(pipe, items, **SETTINGS)

    assert results[1] is None
    assert _same(results[0][0], _alone(pipe, items[0])[0]) and _same(results[2][0], _alone(pipe, items[2])[0])


def test_a_pass_where_everyone_cancelled_stops(pipe):
    steps = []
    items = [BatchItem("a", 1, should_stop=lambda: bool(steps)), BatchItem("b", 2, should_stop=lambda: bool(steps))]
    assert generate_batch(pipe, items, **SETTINGS, on_step=lambda s, t: steps.append(s)) == [None, None]
    assert steps == [1]


def test_prompts_of_other_lengths_run_in_their_own_pass_and_still_match(pipe):
    long_prompt = "a very long prompt about a red square " * 4  # more than 75 tokens: two chunks
    items = [BatchItem("short", 1), BatchItem(long_prompt, 2), BatchItem("also short", 3)]
    steps = []
    results = generate_batch(pipe, items, **SETTINGS, on_step=lambda s, t: steps.append(s))

    assert steps == [1, 2, 3, 1, 2, 3]  # two passes
    for item, images in zip(items, results, strict=True):
        assert _same(images[0], _alone(pipe, item)[0])
