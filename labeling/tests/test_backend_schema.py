"""Strict validation of the model's answer, and the shared prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labeling.backends import ERROR_INVALID_ANSWER, ImageInput, LabelError, LabelResult
from labeling.backends.prompt import build_attached_prompt, build_file_prompt
from labeling.backends.schema import (
    CAPTION_MAX_LENGTH,
    MAX_TAGS,
    TAG_MAX_LENGTH,
    LabelFields,
    answer_to_outcomes,
    parse_answer,
)


def entry(**changes):
    value = {"caption": "A red bicycle.", "tags": ["bicycle", "red"], "categories": ["photo"], "nsfw": False,
             "nsfw_confidence": 0.9}
    value.update(changes)
    return {name: v for name, v in value.items() if v is not ...}


def check(value, key="img-1.png"):
    """Parse an answer holding `value` for one key; the fields or the error message."""
    return parse_answer(json.dumps({key: value}), [key])[key]


def test_it_accepts_a_valid_answer():
    assert check(entry()) == LabelFields("A red bicycle.", ["bicycle", "red"], ["photo"], False, 0.9)


@pytest.mark.parametrize(
    "text",
    [
        '```json\n{"img-1.png": %s}\n```',
        'Here are the labels:\n\n```json\n{"img-1.png": %s}\n```\nLet me know if you need more.',
        '```\n{"img-1.png": %s}\n```',
        '  \n{"img-1.png": %s}\n',
    ],
)
def test_it_accepts_json_in_a_fence_or_bare(text):
    parsed = parse_answer(text % json.dumps(entry()), ["img-1.png"])

    assert isinstance(parsed["img-1.png"], LabelFields)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "the answer is empty"),
        ("I cannot see any images.", "the answer is not valid JSON (Expecting value at line 1 column 1)"),
        ('{"img-1.png": {"caption": "x",', "the answer is not valid JSON"),
        ('```json\n{"a": 1}\n```\n```json\n{"b": 2}\n```', "the answer has 2 fenced blocks"),
        ("```json\n{oops}\n```", "the fenced JSON block is not valid JSON"),
        ('[{"caption": "x"}]', "must be a JSON object keyed by image key, got a list"),
        ('{"img-1.png": {"nsfw_confidence": NaN}}', "NaN is not allowed"),
        ('{"img-1.png": {}, "img-1.png": {}}', "duplicate key 'img-1.png'"),
    ],
)
def test_an_answer_that_is_not_a_json_object_fails_every_image(text, problem):
    parsed = parse_answer(text, ["img-1.png", "img-2.png"])

    assert parsed["img-1.png"] == parsed["img-2.png"]
    assert parsed["img-1.png"].startswith("invalid answer: ")
    assert problem in parsed["img-1.png"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("just a caption", "expected an object with caption, tags, categories, nsfw, nsfw_confidence, got a string"),
        (entry(caption=..., nsfw=...), "missing fields: caption, nsfw"),
        (entry(score=3), "unexpected field: score"),
        (entry(caption=""), "caption is empty"),
        (entry(caption="   \n "), "caption is empty"),
        (entry(caption=None), "caption must be a string, got null"),
        (entry(caption="x" * (CAPTION_MAX_LENGTH + 1)), f"the limit is {CAPTION_MAX_LENGTH}"),
        (entry(caption="bell\x07"), "caption contains control characters"),
        (entry(tags="red, blue"), "tags must be a list of strings, got a string"),
        (entry(tags=["red", 3]), "tags[1] must be a string, got a number"),
        (entry(tags=["red", " "]), "tags[1] is empty"),
        (entry(tags=["x" * (TAG_MAX_LENGTH + 1)]), f"tags[0] is {TAG_MAX_LENGTH + 1} characters long"),
        (entry(tags=[f"t{i}" for i in range(MAX_TAGS + 1)]),
         f"tags has {MAX_TAGS + 1} entries; the limit is {MAX_TAGS}"),
        (entry(categories={"photo": 1}), "categories must be a list of strings, got an object"),
        (entry(categories=["a", "b", "c", "d", "e", "f"]), "categories has 6 entries; the limit is 5"),
        (entry(nsfw="false"), 'nsfw must be true or false, got a string "false"'),
        (entry(nsfw=0), "nsfw must be true or false, got a number 0"),
        (entry(nsfw=None), "nsfw must be true or false, got null"),
        (entry(nsfw_confidence=1.5), "nsfw_confidence must be between 0 and 1, got 1.5"),
        (entry(nsfw_confidence=-0.1), "nsfw_confidence must be between 0 and 1"),
        (entry(nsfw_confidence=True), "nsfw_confidence must be a number from 0 to 1, got a boolean"),
        (entry(nsfw_confidence="0.5"), "nsfw_confidence must be a number from 0 to 1, got a string"),
    ],
)
def test_an_invalid_entry_names_the_problem(value, problem):
    message = check(value)

    assert isinstance(message, str)
    assert message.startswith("invalid answer for img-1.png: ")
    assert problem in message


def test_tags_are_lowercased_trimmed_and_deduplicated():
    fields = check(entry(tags=["Red", "red", "  Blue   Sky ", "blue sky", "RED"], categories=["Photo", "photo"]))

    assert fields.tags == ["red", "blue sky"]
    assert fields.categories == ["photo"]


def test_integer_confidence_and_empty_tag_lists_are_fine():
    fields = check(entry(tags=[], categories=[], nsfw=True, nsfw_confidence=1))

    assert fields.tags == [] and fields.categories == []
    assert fields.nsfw is True and fields.nsfw_confidence == 1.0


def test_a_missing_image_fails_and_unasked_keys_are_ignored():
    text = json.dumps({"img-1.png": entry(), "img-99.png": entry()})

    parsed = parse_answer(text, ["img-1.png", "img-2.png"])

    assert isinstance(parsed["img-1.png"], LabelFields)
    assert parsed["img-2.png"] == "invalid answer: no entry for img-2.png"
    assert set(parsed) == {"img-1.png", "img-2.png"}


def test_outcomes_are_whole_results_or_errors():
    good = ImageInput(id=1, path=Path("a.png"), mime="image/png", width=1, height=1)
    bad = ImageInput(id=2, path=Path("b.jpg"), mime="image/jpeg", width=1, height=1)
    text = json.dumps({good.key: entry(), bad.key: entry(nsfw="yes")})

    outcomes = answer_to_outcomes(text, [good, bad], model="m", version="v")

    assert outcomes[1] == LabelResult("A red bicycle.", ["bicycle", "red"], ["photo"], False, 0.9, "m", "v")
    assert outcomes[2] == LabelError(
        'invalid answer for img-2.jpg: nsfw must be true or false, got a string "yes"', ERROR_INVALID_ANSWER
    )


def test_the_prompts_name_every_key_and_field():
    keys = ["img-1.png", "img-22.jpg"]

    for prompt in (build_file_prompt(keys), build_attached_prompt(keys)):
        for text in ("- img-1.png", "- img-22.jpg", '"caption"', '"tags"', '"categories"', '"nsfw"',
                     '"nsfw_confidence"', "JSON object only"):
            assert text in prompt
    assert "/images" in build_file_prompt(keys)
    assert "attached" in build_attached_prompt(keys)
    with pytest.raises(ValueError):
        build_file_prompt([])
