"""`tagger`: a WD14-format ONNX tagger (a `model.onnx` plus `selected_tags.csv`), offline.

The folder holds what the tagger repositories on the Hugging Face hub ship (SmilingWolf's wd-*-tagger
family): `model.onnx`, whose single input is NHWC float32 BGR pixels 0..255 and whose single output is
one probability per row of `selected_tags.csv` (columns tag_id, name, category, count; category 0 is a
general tag, 4 a character, 9 a rating). Pre-processing follows kohya-ss's `tag_images_by_wd14_tagger.py`:
pad to a square with white, centred, then resize to the model's input size (area filter when shrinking,
Lanczos when growing). Rating probabilities become our NSFW verdict; tags get spaces for underscores
(emoticons such as `^_^` keep theirs) and blacklisted tags are dropped.

onnxruntime is imported inside the functions that need it; sessions are cached per process by the model
file's path, size and modification time, so a worker loads a model once.
"""

from __future__ import annotations

import csv
import hashlib
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .base import (
    ERROR_INVALID_ANSWER,
    BackendUnavailable,
    ImageInput,
    LabelError,
    LabelOutcome,
    LabelResult,
)
from .local import label_each
from .schema import MAX_TAGS, TAG_MAX_LENGTH

MODEL_FILE = "model.onnx"
TAGS_FILE = "selected_tags.csv"
CATEGORY_GENERAL = 0
CATEGORY_CHARACTER = 4
CATEGORY_RATING = 9
NSFW_RATINGS = frozenset({"questionable", "explicit"})
SAFE_RATINGS = frozenset({"general", "sensitive", "safe"})
DEFAULT_SIZE = 448
_FETCH_HINT = ("run `python manage.py fetch_label_models --tagger` where the Hugging Face hub can be reached, "
               "or copy model.onnx and selected_tags.csv there by hand (see README, 'Offline labelers')")


@dataclass(frozen=True)
class Tag:
    name: str
    category: int


@dataclass
class LoadedTagger:
    session: object
    input_name: str
    size: int
    tags: list[Tag]
    version: str


_cache: dict[tuple, LoadedTagger] = {}
_cache_lock = threading.Lock()


def read_tags(path: Path) -> list[Tag]:
    """The rows of a selected_tags.csv; raises ValueError naming the first problem."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"name", "category"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path.name} has no {', '.join(sorted(missing))} column")
        tags = []
        for line, row in enumerate(reader, start=2):
            try:
                category = int(row["category"])
            except (TypeError, ValueError):
                raise ValueError(f"{path.name} line {line}: category {row['category']!r} is not a number")
            if not (row["name"] or "").strip():
                raise ValueError(f"{path.name} line {line}: the tag name is empty")
            tags.append(Tag(row["name"].strip(), category))
    if not tags:
        raise ValueError(f"{path.name} lists no tags")
    return tags


def _file_version(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def load_tagger(model_dir: Path) -> LoadedTagger:
    """The session and tag list of a tagger folder; raises BackendUnavailable with what is wrong."""
    model_path, tags_path = model_dir / MODEL_FILE, model_dir / TAGS_FILE
    for path in (model_path, tags_path):
        if not path.is_file():
            raise BackendUnavailable(f"The tagger model is missing: {path} does not exist; {_FETCH_HINT}.")
    stat = model_path.stat()
    tags_stat = tags_path.stat()
    key = (str(model_path.resolve()), stat.st_size, stat.st_mtime_ns, tags_stat.st_size, tags_stat.st_mtime_ns)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
        try:
            tags = read_tags(tags_path)
        except (ValueError, UnicodeDecodeError, csv.Error) as exc:
            raise BackendUnavailable(f"The tagger's tag list is unusable: {exc}") from exc
        # onnxruntime is imported here only: the web process never needs it.
        import onnxruntime

        try:
            session = onnxruntime.InferenceSession(str(model_path), providers=_providers(onnxruntime))
        except Exception as exc:  # a truncated or foreign file
            raise BackendUnavailable(f"The tagger model {model_path} cannot be loaded: {exc}") from exc
        inputs, outputs = session.get_inputs(), session.get_outputs()
        shape = list(inputs[0].shape) if inputs else []
        if len(inputs) != 1 or len(shape) != 4 or shape[3] != 3:
            raise BackendUnavailable(f"The tagger model {model_path} does not take one NHWC image input "
                                     f"with 3 channels (its input shape is {shape}).")
        size = shape[1] if isinstance(shape[1], int) and shape[1] > 0 else DEFAULT_SIZE
        width = outputs[0].shape[-1] if outputs else None
        if isinstance(width, int) and width != len(tags):
            raise BackendUnavailable(f"The tagger model gives {width} scores but {TAGS_FILE} lists {len(tags)} "
                                     "tags: they do not belong together.")
        loaded = LoadedTagger(session=session, input_name=inputs[0].name, size=size, tags=tags,
                              version=_file_version(model_path))
        _cache.clear()  # one model per process: a replaced file drops the old session
        _cache[key] = loaded
        return loaded


def _providers(onnxruntime) -> list[str]:
    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available] or available


def preprocess(picture, size: int):
    """An RGB Pillow image as a (size, size, 3) float32 BGR array, padded white to a square first."""
    import numpy as np
    from PIL import Image

    side = max(picture.size)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(picture, ((side - picture.width) // 2, (side - picture.height) // 2))
    if side != size:
        resample = Image.Resampling.BOX if side > size else Image.Resampling.LANCZOS
        canvas = canvas.resize((size, size), resample)
    return np.asarray(canvas, dtype=np.float32)[:, :, ::-1].copy()


def tag_text(name: str) -> str:
    """Underscores become spaces, except in short emoticons (`^_^`, `o_o`) where they are the point."""
    if len(name) <= 3 or not any(ch.isalpha() for ch in name.replace("_", "")):
        return name
    return name.replace("_", " ")


def select_tags(scores: Iterable[float], tags: list[Tag], *, general_threshold: float, character_threshold: float,
                blacklist: frozenset[str]) -> tuple[list[tuple[str, float]], dict[str, float]]:
    """(tags above their threshold, best first, characters before general ones; rating scores by name)."""
    characters, general, ratings = [], [], {}
    for tag, score in zip(tags, scores, strict=True):
        if tag.category == CATEGORY_RATING:
            ratings[tag.name.lower()] = score
            continue
        text = tag_text(tag.name)
        if tag.name.lower() in blacklist or text.lower() in blacklist or len(text) > TAG_MAX_LENGTH:
            continue
        if tag.category == CATEGORY_CHARACTER and score >= character_threshold:
            characters.append((text, score))
        elif tag.category == CATEGORY_GENERAL and score >= general_threshold:
            general.append((text, score))
    ranked = sorted(characters, key=lambda t: -t[1]) + sorted(general, key=lambda t: -t[1])
    return ranked[:MAX_TAGS], ratings


def rating_verdict(ratings: dict[str, float]) -> tuple[bool | None, float | None]:
    """(nsfw, confidence in that verdict): questionable + explicit against general + sensitive."""
    unsafe = sum(score for name, score in ratings.items() if name in NSFW_RATINGS)
    safe = sum(score for name, score in ratings.items() if name in SAFE_RATINGS)
    if unsafe + safe <= 0:
        return None, None
    share = unsafe / (unsafe + safe)
    return (True, round(share, 4)) if share >= 0.5 else (False, round(1 - share, 4))


def parse_blacklist(value) -> frozenset[str]:
    """Blacklisted tags in both spellings (with underscores and with spaces), lower case."""
    items = value.split(",") if isinstance(value, str) else (value or [])
    names: set[str] = set()
    for item in items:
        spaced = " ".join(str(item).replace("_", " ").lower().split())
        if spaced:
            names.update({spaced, spaced.replace(" ", "_")})
    return frozenset(names)


class TaggerBackend:
    name = "tagger"

    def __init__(self, *, model_dir: str | Path | None = None, general_threshold: float | None = None,
                 character_threshold: float | None = None, blacklist=None):
        from django.conf import settings

        self.model_dir = Path(model_dir or settings.LABEL_TAGGER_DIR)
        self.general_threshold = float(settings.LABEL_TAGGER_GENERAL_THRESHOLD if general_threshold is None
                                       else general_threshold)
        self.character_threshold = float(settings.LABEL_TAGGER_CHARACTER_THRESHOLD if character_threshold is None
                                         else character_threshold)
        self.blacklist = parse_blacklist(settings.LABEL_TAGGER_BLACKLIST if blacklist is None else blacklist)

    @property
    def model_name(self) -> str:
        return f"wd-tagger:{self.model_dir.name}"[:100]

    def check(self) -> None:
        load_tagger(self.model_dir)

    def label_batch(self, images: list[ImageInput], *, should_stop: Callable[[], bool]) -> dict[int, LabelOutcome]:
        import numpy as np

        if not images:
            return {}
        tagger = load_tagger(self.model_dir)

        def label_one(image, width, height, picture) -> LabelOutcome:
            batch = preprocess(picture, tagger.size)[None, ...]
            try:
                (scores,) = tagger.session.run(None, {tagger.input_name: batch})[:1]
            except Exception as exc:
                return LabelError(f"the tagger failed on this image: {exc}")
            scores = np.asarray(scores, dtype=np.float64).reshape(-1)
            if scores.shape[0] != len(tagger.tags) or not all(math.isfinite(s) and 0 <= s <= 1 for s in scores):
                return LabelError(
                    f"invalid answer: the tagger gave {scores.shape[0]} scores for {len(tagger.tags)} tags, or "
                    "scores outside 0..1", ERROR_INVALID_ANSWER)
            ranked, ratings = select_tags(scores.tolist(), tagger.tags, general_threshold=self.general_threshold,
                                          character_threshold=self.character_threshold, blacklist=self.blacklist)
            nsfw, confidence = rating_verdict(ratings)
            return LabelResult(
                caption=None, tags=[name for name, _ in ranked], categories=[], nsfw=nsfw,
                nsfw_confidence=confidence, model=self.model_name, version=tagger.version,
                tag_confidences={name: round(score, 4) for name, score in ranked},
            )

        return label_each(images, should_stop, label_one, verb="tagging", max_side=None)
