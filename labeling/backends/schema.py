"""Strict validation of a model's labeling answer.

The answer is one JSON object keyed by image key (see `ImageInput.key`); each value must hold
exactly caption, tags, categories, nsfw and nsfw_confidence. An image whose entry is missing or
wrong in any way fails as a whole with a message naming the problem: nothing partial survives.
Only harmless normalisation happens (whitespace, lower-casing tags, dropping duplicate tags).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from .base import ERROR_INVALID_ANSWER, ImageInput, LabelError, LabelOutcome, LabelResult

CAPTION_MAX_LENGTH = 500
TAG_MAX_LENGTH = 40
MAX_TAGS = 30
CATEGORY_MAX_LENGTH = 40
MAX_CATEGORIES = 5
FIELDS = ("caption", "tags", "categories", "nsfw", "nsfw_confidence")

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\r?\n(.*?)```", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPACES = re.compile(r"\s+")


class AnswerError(ValueError):
    """The answer (or one entry of it) does not have the required shape."""


@dataclass(frozen=True)
class LabelFields:
    caption: str
    tags: list[str]
    categories: list[str]
    nsfw: bool
    nsfw_confidence: float

    def to_result(self, *, model: str, version: str) -> LabelResult:
        return LabelResult(
            caption=self.caption,
            tags=list(self.tags),
            categories=list(self.categories),
            nsfw=self.nsfw,
            nsfw_confidence=self.nsfw_confidence,
            model=model,
            version=version,
        )


def _reject_constant(name: str) -> Any:
    raise AnswerError(f"{name} is not allowed in JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise AnswerError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)


def _preview(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def extract_json(text: str) -> Any:
    """The JSON value of an answer: either the whole text, or the one ```json fenced block in it."""
    if not isinstance(text, str) or not text.strip():
        raise AnswerError("the answer is empty")
    stripped = text.strip()
    try:
        return _loads(stripped)
    except json.JSONDecodeError as whole_error:
        blocks = _FENCE.findall(stripped)
        if len(blocks) > 1:
            raise AnswerError(f"the answer has {len(blocks)} fenced blocks; expected exactly one JSON object")
        if not blocks:
            raise AnswerError(f"the answer is not valid JSON ({whole_error.msg} at line {whole_error.lineno} "
                              f"column {whole_error.colno}); it starts with {_preview(stripped)!r}")
        try:
            return _loads(blocks[0].strip())
        except json.JSONDecodeError as block_error:
            raise AnswerError(f"the fenced JSON block is not valid JSON ({block_error.msg} at line "
                              f"{block_error.lineno} column {block_error.colno})")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def _clean_text(value: str) -> str:
    return _SPACES.sub(" ", value).strip()


def _string_list(entry: dict[str, Any], field: str, *, max_items: int, max_length: int) -> list[str]:
    value = entry[field]
    if not isinstance(value, list):
        raise AnswerError(f"{field} must be a list of strings, got {_type_name(value)}")
    seen: dict[str, None] = {}
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise AnswerError(f"{field}[{index}] must be a string, got {_type_name(item)}")
        if _CONTROL.search(item):
            raise AnswerError(f"{field}[{index}] contains control characters")
        cleaned = _clean_text(item).lower()
        if not cleaned:
            raise AnswerError(f"{field}[{index}] is empty")
        if len(cleaned) > max_length:
            raise AnswerError(f"{field}[{index}] is {len(cleaned)} characters long; the limit is {max_length}")
        seen.setdefault(cleaned, None)
    if len(seen) > max_items:
        raise AnswerError(f"{field} has {len(seen)} entries; the limit is {max_items}")
    return list(seen)


def validate_entry(entry: Any) -> LabelFields:
    """Validate one image's answer; raises AnswerError naming the first problem found."""
    if not isinstance(entry, dict):
        raise AnswerError(f"expected an object with {', '.join(FIELDS)}, got {_type_name(entry)}")
    missing = [name for name in FIELDS if name not in entry]
    if missing:
        raise AnswerError(f"missing field{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    unexpected = sorted(set(entry) - set(FIELDS))
    if unexpected:
        raise AnswerError(f"unexpected field{'s' if len(unexpected) > 1 else ''}: {', '.join(unexpected)}")

    caption = entry["caption"]
    if not isinstance(caption, str):
        raise AnswerError(f"caption must be a string, got {_type_name(caption)}")
    if _CONTROL.search(caption):
        raise AnswerError("caption contains control characters")
    caption = _clean_text(caption)
    if not caption:
        raise AnswerError("caption is empty")
    if len(caption) > CAPTION_MAX_LENGTH:
        raise AnswerError(f"caption is {len(caption)} characters long; the limit is {CAPTION_MAX_LENGTH}")

    tags = _string_list(entry, "tags", max_items=MAX_TAGS, max_length=TAG_MAX_LENGTH)
    categories = _string_list(entry, "categories", max_items=MAX_CATEGORIES, max_length=CATEGORY_MAX_LENGTH)

    nsfw = entry["nsfw"]
    if not isinstance(nsfw, bool):
        raise AnswerError(f"nsfw must be true or false, got {_type_name(nsfw)} {_preview(json.dumps(nsfw), 30)}")

    confidence = entry["nsfw_confidence"]
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        raise AnswerError(f"nsfw_confidence must be a number from 0 to 1, got {_type_name(confidence)}")
    if not math.isfinite(confidence) or not 0 <= confidence <= 1:
        raise AnswerError(f"nsfw_confidence must be between 0 and 1, got {confidence}")

    return LabelFields(caption=caption, tags=tags, categories=categories, nsfw=nsfw,
                       nsfw_confidence=float(confidence))


def parse_answer(text: str, keys: list[str]) -> dict[str, LabelFields | str]:
    """Each key's validated fields, or an error message for that key.

    An answer that is not a JSON object at all fails every key with the same message.
    Keys in the answer that were not asked for are ignored.
    """
    try:
        data = extract_json(text)
        if not isinstance(data, dict):
            raise AnswerError(f"the answer must be a JSON object keyed by image key, got {_type_name(data)}")
    except AnswerError as exc:
        return {key: f"invalid answer: {exc}" for key in keys}

    parsed: dict[str, LabelFields | str] = {}
    for key in keys:
        if key not in data:
            parsed[key] = f"invalid answer: no entry for {key}"
            continue
        try:
            parsed[key] = validate_entry(data[key])
        except AnswerError as exc:
            parsed[key] = f"invalid answer for {key}: {exc}"
    return parsed


def answer_to_outcomes(
    text: str, images: list[ImageInput], *, model: str, version: str
) -> dict[int, LabelOutcome]:
    """Validate an answer for a batch and turn it into one outcome per image."""
    parsed = parse_answer(text, [image.key for image in images])
    outcomes: dict[int, LabelOutcome] = {}
    for image in images:
        item = parsed[image.key]
        if isinstance(item, LabelFields):
            outcomes[image.id] = item.to_result(model=model, version=version)
        else:
            outcomes[image.id] = LabelError(item, code=ERROR_INVALID_ANSWER)
    return outcomes
