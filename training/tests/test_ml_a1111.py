"""A1111 parameters from untrusted PNGs: LoRA tags and settings are read in linear time from bounded text."""

from __future__ import annotations

import io
import time

from PIL import Image

from training.ml.a1111 import (
    MAX_LORA_TAGS,
    MAX_PARAMETERS_CHARS,
    parse_a1111_parameters,
    png_bytes_with_parameters,
    read_png_parameters,
)


def _timed(text: str) -> tuple[dict, float]:
    started = time.perf_counter()
    parsed = parse_a1111_parameters(text)
    return parsed, time.perf_counter() - started


def test_lora_tags_are_read_with_their_weights():
    parsed = parse_a1111_parameters(
        "a fox <lora:fox_style:0.8>, forest <lora:light> <lora:detail:-0.25:te=1> <lora:blank:> <lora::0.5> "
        "<lora:bad:heavy>\nSteps: 20, Sampler: Euler a, Seed: 3"
    )
    assert parsed["loras"] == [("fox_style", 0.8), ("light", 1.0), ("detail", -0.25), ("blank", 1.0), ("bad", 1.0)]
    assert parsed["prompt"] == "a fox , forest <lora::0.5>"
    assert parsed["steps"] == 20


def test_thousands_of_unclosed_lora_tags_parse_at_once():
    text = "<lora:" * 7_000  # 42 KB; the backtracking pattern took about 25 s on this
    parsed, seconds = _timed(text)
    assert seconds < 1
    assert parsed["loras"] == [] and len(parsed["raw_prompt"]) <= MAX_PARAMETERS_CHARS
    parsed, seconds = _timed("a cat " + "<lora:x:" * 5_000 + "\nSteps: 1, Seed: 2, Size: 8x8")
    assert seconds < 1 and parsed["loras"] == []


def test_the_lora_list_is_bounded_and_every_tag_leaves_the_prompt():
    parsed, seconds = _timed("style " + "<lora:a:0.5>" * 2_500)  # 30 KB, under the cap
    assert seconds < 1
    assert parsed["loras"] == [("a", 0.5)] * MAX_LORA_TAGS
    assert parsed["prompt"] == "style"


def test_a_long_run_of_spaces_in_the_settings_line_is_linear():
    parsed, seconds = _timed("a cat\n" + " " * 30_000 + ", Steps: 3, Seed: 4, Size: 8x8")
    assert seconds < 1  # the old field pattern's leading \s* took about a minute here
    assert (parsed["steps"], parsed["seed"]) == (3, 4)


def test_the_parameters_chunk_read_from_a_png_is_capped():
    data = png_bytes_with_parameters(Image.new("RGB", (8, 8)), "a" * (MAX_PARAMETERS_CHARS * 3))
    assert len(read_png_parameters(data)) == MAX_PARAMETERS_CHARS
    plain = io.BytesIO()
    Image.new("RGB", (8, 8)).save(plain, format="PNG")
    assert read_png_parameters(plain.getvalue()) is None
