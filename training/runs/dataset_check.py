"""The dataset check: what kohya users learn the hard way, listed before a run starts. Warnings, never blocks.

It reads the frozen snapshot (or the one the chosen albums would make) plus each image's size and perceptual
hash from the gallery, and the labels to tell a real caption from the album-name fallback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gallery.models import Image
from labeling.selectors import training_captions

# Perceptual hashes this close (of 64 bits) are near duplicates: the same picture resized, re-encoded or
# lightly edited. The gallery's own near-duplicate search uses a similar threshold.
NEAR_DUPLICATE_BITS = 6
# Beyond 2:1 the aspect buckets stop and the crop cuts much of the picture away.
EXTREME_RATIO = 2.5
MIN_IMAGES = 5
# More passes than this over each image and a LoRA memorises its pictures rather than learning the concept.
MAX_REPEATS = 200
MAX_LISTED = 12


@dataclass
class DatasetWarning:
    code: str
    message: str
    image_ids: list[int] = field(default_factory=list)

    @property
    def listed_ids(self) -> list[int]:
        return self.image_ids[:MAX_LISTED]


def check_snapshot(
    entries: Sequence[dict[str, Any]],
    *,
    resolution: int,
    steps: int,
    batch_size: int = 1,
    gradient_accumulation: int = 1,
    trigger_word: str = "",
) -> list[DatasetWarning]:
    """Warnings for a snapshot (the run's `dataset` list); an empty list when nothing looks wrong."""
    warnings: list[DatasetWarning] = []
    ids = [int(e["image_id"]) for e in entries]
    rows = {pk: (w, h, ph) for pk, w, h, ph in Image.objects.filter(pk__in=ids).values_list(
        "pk", "width", "height", "phash")}
    count = len(entries)
    if count and count < MIN_IMAGES:
        warnings.append(DatasetWarning("few_images", f"Only {count} image{'s' if count != 1 else ''}: a LoRA "
                                       f"learns a concept from {MIN_IMAGES * 3} or more varied pictures."))
    repeats = steps * batch_size * gradient_accumulation / count if count else 0
    if repeats > MAX_REPEATS:
        warnings.append(DatasetWarning(
            "too_many_repeats", f"{steps} steps show each of the {count} images about {repeats:.0f} times: expect "
            f"it to copy the pictures. Add images or lower the steps (about {MAX_REPEATS} passes at most)."))

    small = [pk for pk in ids if pk in rows and rows[pk][0] * rows[pk][1] < resolution * resolution]
    if small:
        warnings.append(DatasetWarning(
            "below_resolution", f"{_n(small)} below the training resolution ({resolution}×{resolution} pixels): "
            "they are upscaled and train blur.", small))
    extreme = [pk for pk in ids if pk in rows and max(rows[pk][:2]) / max(1, min(rows[pk][:2])) > EXTREME_RATIO]
    if extreme:
        warnings.append(DatasetWarning(
            "extreme_aspect", f"{_n(extreme)} with an aspect ratio beyond {EXTREME_RATIO}:1: cropping to a training "
            "bucket cuts much of each away.", extreme))

    empty = [int(e["image_id"]) for e in entries if not str(e.get("caption", "")).strip()]
    labelled = training_captions(ids, fallback="")
    fallback = [pk for pk in ids if not labelled.get(pk, "").strip() and pk not in empty]
    if empty:
        warnings.append(DatasetWarning("empty_caption", f"{_n(empty)} with an empty caption.", empty))
    if fallback:
        warnings.append(DatasetWarning(
            "missing_caption", f"{_n(fallback)} without a caption or tags: they train on the album's name only. "
            "Caption them (Labeling) for a LoRA that follows prompts.", fallback))
    trigger = trigger_word.strip().lower()
    if trigger:
        lacking = [int(e["image_id"]) for e in entries
                   if trigger not in (t.strip().lower() for t in str(e.get("caption", "")).split(","))
                   and trigger not in str(e.get("caption", "")).lower()]
        if lacking:
            warnings.append(DatasetWarning(
                "no_trigger", f"{_n(lacking, 'caption')} without the trigger word “{trigger_word.strip()}”: "
                "training puts it first in each.", lacking))

    exact = _exact_duplicates(entries)
    if exact:
        warnings.append(DatasetWarning(
            "exact_duplicates", f"{_n(exact)} are exact copies of another image in the dataset: they count "
            "twice.", exact))
    near = [pk for pk in _near_duplicates([(pk, rows[pk][2]) for pk in ids if pk in rows]) if pk not in exact]
    if near:
        warnings.append(DatasetWarning(
            "near_duplicates", f"{_n(near)} are near duplicates of another image in the dataset (resized, "
            "re-encoded or lightly edited): they weigh more than the rest.", near))
    return warnings


def _n(ids: Sequence[int], noun: str = "image") -> str:
    return f"{len(ids)} {noun}{'s' if len(ids) != 1 else ''}"


def _exact_duplicates(entries: Sequence[dict[str, Any]]) -> list[int]:
    first: dict[str, int] = {}
    copies = []
    for entry in entries:
        digest = entry.get("sha256") or ""
        if digest and digest in first:
            copies.append(int(entry["image_id"]))
        elif digest:
            first[digest] = int(entry["image_id"])
    return copies


def _near_duplicates(hashes: Sequence[tuple[int, int]]) -> list[int]:
    """Ids of images whose perceptual hash is within NEAR_DUPLICATE_BITS of an earlier image's."""
    # numpy counts the differing bits of one hash against all earlier ones at once.
    import numpy as np

    if len(hashes) < 2:
        return []
    values = np.array([h & ((1 << 64) - 1) for _, h in hashes], dtype=np.uint64)
    found = []
    for index in range(1, len(values)):
        diff = values[:index] ^ values[index]
        bits = np.unpackbits(diff.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        if int(bits.min()) <= NEAR_DUPLICATE_BITS:
            found.append(hashes[index][0])
    return found


def check_run(run) -> list[DatasetWarning]:
    """The check for a run's frozen snapshot and settings."""
    options = run.options or {}
    return check_snapshot(run.dataset, resolution=run.resolution, steps=run.steps, batch_size=run.batch_size,
                          gradient_accumulation=int(options.get("gradient_accumulation") or 1),
                          trigger_word=str(options.get("trigger_word") or ""))
