"""A1111 prompt weighting and long prompts: the parser, and the embeddings it feeds the tiny pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from training.ml.generate import generate, set_scheduler
from training.ml.pipelines import apply_loras
from training.ml.prompt_weights import (
    CHUNK_TOKENS,
    Segment,
    encode_prompts,
    parse_prompt_weights,
    token_chunks,
)


@pytest.fixture
def pipe(tiny_pipe):
    apply_loras(tiny_pipe, [])
    return tiny_pipe


def _weights(prompt):
    return [(s.text, round(s.weight, 4)) for s in parse_prompt_weights(prompt)]


@pytest.mark.parametrize(("prompt", "expected"), [
    ("a cat", [("a cat", 1.0)]),
    ("a (cat:1.5) sat", [("a ", 1.0), ("cat", 1.5), (" sat", 1.0)]),
    ("(cat)", [("cat", 1.1)]),
    ("((cat))", [("cat", 1.21)]),
    ("[cat]", [("cat", 0.9091)]),
    ("[[cat]]", [("cat", 0.8264)]),
    ("(a (b:2) c:0.5)", [("a ", 0.5), ("b", 1.0), (" c", 0.5)]),
    ("(cat:-0.5)", [("cat", -0.5)]),
    (r"\(not weighted\) \[x\] a\\b", [("(not weighted) [x] a\\b", 1.0)]),
    ("unclosed (cat", [("unclosed ", 1.0), ("cat", 1.1)]),
    ("stray) ] here", [("stray) ] here", 1.0)]),
    ("(time: 10am)", [("time: 10am", 1.1)]),
    ("a BREAK b", [("a ", 1.0), ("BREAK", -1.0), (" b", 1.0)]),
    ("BREAKFAST", [("BREAKFAST", 1.0)]),
])
def test_a1111_syntax_is_parsed_into_weighted_segments(prompt, expected):
    assert _weights(prompt) == expected


def test_an_empty_prompt_is_one_empty_segment():
    assert parse_prompt_weights("") == [Segment("", 1.0)]


def test_weights_scale_exactly_the_tokens_they_cover(pipe):
    # The tiny tokenizer makes one token per byte of each word; positions come from the tokenizer itself.
    plain = encode_prompts(pipe, "a red cube", "")["prompt_embeds"][0]
    heavy = encode_prompts(pipe, "a (red:1.5) cube", "")["prompt_embeds"][0]
    (ids, weights), = token_chunks(pipe.tokenizer, "a (red:1.5) cube")
    assert ids == token_chunks(pipe.tokenizer, "a red cube")[0][0]  # the same tokens, only weights differ

    ratio = (heavy / plain).mean(dim=-1).numpy()  # per token: weight × the chunk's mean-restoring factor
    weighted = [1 + i for i, w in enumerate(weights) if w == 1.5]  # +1: the start token comes first
    others = [1 + i for i, w in enumerate(weights) if w == 1.0]
    assert len(weighted) == 3
    factor = ratio[others].mean()
    assert np.allclose(ratio[others], factor, rtol=1e-4)
    assert np.allclose(ratio[weighted], 1.5 * factor, rtol=1e-4)
    # The normalisation keeps the chunk's mean.
    # (After the final layer norm the mean is near zero, so it is compared at the embeddings' own scale.)
    assert float(heavy.mean()) == pytest.approx(float(plain.mean()), abs=1e-5 * float(plain.abs().mean()))


def test_a_prompt_without_syntax_gives_the_same_image_as_the_pipelines_own_encoding(pipe):
    import torch

    set_scheduler(pipe, "euler")
    with torch.inference_mode():
        own = pipe(prompt="a red square", negative_prompt="blur", num_inference_steps=2, width=32, height=32,
                   generator=[torch.Generator("cpu").manual_seed(3)]).images[0]
    ours = generate(pipe, prompt="a red square", negative_prompt="blur", steps=2, width=32, height=32,
                    guidance_scale=7.5, scheduler="euler", seed=3)[0]
    assert own.tobytes() == ours.tobytes()


def test_weights_change_the_image(pipe):
    params = dict(steps=2, width=32, height=32, scheduler="euler", seed=3)
    plain = generate(pipe, prompt="a red square", **params)[0]
    weighted = generate(pipe, prompt="a (red:1.8) square", **params)[0]
    assert np.abs(np.asarray(plain, dtype=np.int16) - np.asarray(weighted, dtype=np.int16)).max() > 3


def test_long_prompts_are_encoded_in_chunks_of_75_tokens_and_every_chunk_counts(pipe):
    base = "a very long prompt " * 6  # 114 bytes: more than one chunk with the byte-level tokenizer
    chunks = token_chunks(pipe.tokenizer, base + "red")
    assert len(chunks) == 2 and len(chunks[0][0]) == CHUNK_TOKENS

    red = encode_prompts(pipe, base + "red", "")
    blue = encode_prompts(pipe, base + "blue", "")
    assert tuple(red["prompt_embeds"].shape) == (1, 2 * 77, 32)
    assert red["negative_prompt_embeds"].shape == red["prompt_embeds"].shape  # padded to the same chunks
    # The words after token 75 change the second chunk (diffusers alone would have cut them off).
    assert not np.allclose(red["prompt_embeds"][0, 77:].numpy(), blue["prompt_embeds"][0, 77:].numpy())
    assert np.allclose(red["prompt_embeds"][0, :77].numpy(), blue["prompt_embeds"][0, :77].numpy())
    image = generate(pipe, prompt=base + "red", steps=2, width=32, height=32, scheduler="euler", seed=1)[0]
    assert image.size == (32, 32)


def test_break_starts_a_new_chunk(pipe):
    chunks = token_chunks(pipe.tokenizer, "red BREAK blue")
    assert len(chunks) == 2 and len(chunks[0][0]) < CHUNK_TOKENS
    assert encode_prompts(pipe, "red BREAK blue", "")["prompt_embeds"].shape[1] == 2 * 77


def test_sdxl_gets_concatenated_encoders_and_pooled_embeddings(tmp_path):
    from training.ml.pipelines import load_pipeline
    from training.ml.tiny import build_tiny_pipeline

    xl = load_pipeline(str(build_tiny_pipeline(tmp_path / "xl", kind="sdxl")), kind="sdxl", source_type="folder",
                       device="cpu")
    kwargs = encode_prompts(xl, "a (red:1.3) square " * 10, "", repeat=2)  # 100 tokens: two chunks
    width = xl.text_encoder.config.hidden_size + xl.text_encoder_2.config.hidden_size
    assert tuple(kwargs["prompt_embeds"].shape) == (2, 2 * 77, width)
    assert kwargs["pooled_prompt_embeds"].shape[0] == 2 and kwargs["negative_pooled_prompt_embeds"].shape[0] == 2
    image = generate(xl, prompt="a (red:1.3) square", steps=2, width=64, height=64, scheduler="euler", seed=1)[0]
    assert image.size == (64, 64)
