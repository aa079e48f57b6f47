"""Reads for training: who sees which run and LoRA, the loss chart, the log tail, the run's files."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from django.db.models import Q

from gallery.models import Album, Image
from imagineer.artifacts import artifact_exists, artifact_open
from labeling.selectors import training_captions

from ..models import BaseModel, EvaluationGrid, LoraModel, TrainingRun
from .artifacts import log_key
from .params import MAX_SAMPLE_PROMPT

_LOG_TAIL_BYTES = 64 * 1024


def albums_for_training(user):
    """Albums a user may train on, with the count of images they may see (what a snapshot would take):
    their own; staff may use anyone's. Albums flagged as a training source come first."""
    qs = Album.objects.all() if user.is_staff else Album.objects.filter(owner=user)
    return qs.with_counts(user).select_related("owner").order_by("-is_training_source", "owner__username", "name")


def runs_visible_to(user):
    """Runs a user may open: their own; staff see everyone's."""
    qs = TrainingRun.objects.select_related("base_model", "owner")
    if user is None or not user.is_authenticated:
        return qs.none()
    return qs if user.is_staff else qs.filter(owner=user)


def grids_visible_to(user):
    """Evaluation grids a user may open: their own; staff see everyone's."""
    qs = EvaluationGrid.objects.select_related("run", "base_model")
    if user is None or not user.is_authenticated:
        return qs.none()
    return qs if user.is_staff else qs.filter(owner=user)


def loras_visible_to(user):
    """LoRAs a user may see and generate with: public ones, their own; staff see all."""
    qs = LoraModel.objects.select_related("base_model", "owner", "training_run")
    if user is None or not user.is_authenticated:
        return qs.filter(is_public=True)
    if user.is_staff:
        return qs
    return qs.filter(Q(is_public=True) | Q(owner=user))


def can_manage(user, obj) -> bool:
    return user is not None and user.is_authenticated and (user.is_staff or user.pk == obj.owner_id)


def base_models():
    return BaseModel.objects.order_by("-is_default", "name")


@dataclass(frozen=True)
class LossChart:
    points: str  # SVG polyline points
    width: int
    height: int
    first: float
    last: float
    low: float
    high: float
    steps: int


def loss_chart(run: TrainingRun, *, width: int = 600, height: int = 160, pad: int = 4) -> LossChart | None:
    """The loss history as an SVG polyline, scaled to the box (x: step, y: loss, low at the bottom)."""
    history = [(int(s), float(v)) for s, v in run.loss_history if math.isfinite(float(v))]
    if not history:
        return None
    low = min(v for _, v in history)
    high = max(v for _, v in history)
    span = (high - low) or 1.0
    max_step = max(run.total_steps or run.steps, history[-1][0], 1)
    coords = []
    for step, value in history:
        x = pad + (width - 2 * pad) * step / max_step
        y = pad + (height - 2 * pad) * (1 - (value - low) / span)
        coords.append(f"{x:.1f},{y:.1f}")
    if len(coords) == 1:  # a single point still draws as a short flat line
        coords.insert(0, f"{pad:.1f},{coords[0].split(',')[1]}")
    return LossChart(" ".join(coords), width, height, history[0][1], history[-1][1], low, high, history[-1][0])


def duration_text(value: timedelta | None) -> str:
    """'1 h 05 min', '3 min 20 s', '12 s'; empty for None."""
    if value is None:
        return ""
    seconds = max(0, int(value.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def log_tail(run: TrainingRun, *, lines: int = 40) -> list[str]:
    """The last lines of the run's log, read from the artifacts storage (the worker may be another machine)."""
    try:
        with artifact_open(log_key(run)) as handle:
            size = handle.size
            if size > _LOG_TAIL_BYTES:
                handle.seek(size - _LOG_TAIL_BYTES)
            text = handle.read().decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return []
    return text.splitlines(keepends=True)[-lines:]


def sample_images(run: TrainingRun) -> list[dict]:
    """[{step, index, url}] newest first; the row lists a sample only once it is stored."""
    from django.urls import reverse

    found = []
    for entry in sorted(run.samples, key=lambda s: -int(s.get("step", 0))):
        for index, _name in enumerate(entry.get("files", [])):
            found.append({"step": entry["step"], "index": index,
                          "url": reverse("training:run_sample", args=[run.pk, entry["step"], index])})
    return found


def dataset_image_ids_visible_to(run: TrainingRun, user) -> set[int]:
    """The ids of the run's frozen dataset images that `user` may still see (gallery's visibility rule)."""
    ids = [entry.get("image_id") for entry in run.dataset if isinstance(entry.get("image_id"), int)]
    return set(Image.objects.visible_to(user).filter(pk__in=ids).values_list("pk", flat=True))


def run_artifact_key(run: TrainingRun, name: str) -> str | None:
    """The storage key of a file the run's job wrote, given as a key or relative to the run, else None.

    Only keys under the run's own prefix are ever served: a row is data, and anything else (another run, a
    path on some machine) must never be.
    """
    if not name:
        return None
    prefix = run.artifact_prefix + "/"
    key = name if name.startswith(prefix) else prefix + name
    parts = key.split("/")
    if ".." in parts or "" in parts or name.startswith("/"):
        return None
    return key


def lora_key(lora: LoraModel, fmt: str) -> str | None:
    """The LoRA's key in `fmt` ("diffusers" or "kohya") when its run wrote it."""
    name = {"diffusers": lora.diffusers_file, "kohya": lora.kohya_file}.get(fmt)
    if not name or lora.training_run is None or not name.startswith(lora.training_run.artifact_prefix + "/"):
        return None
    return run_artifact_key(lora.training_run, name)


def sample_key(run: TrainingRun, step: int, index: int) -> str | None:
    for entry in run.samples:
        if int(entry.get("step", -1)) == step:
            files = entry.get("files", [])
            if 0 <= index < len(files):
                return run_artifact_key(run, files[index])
    return None


def run_files(run: TrainingRun) -> dict[str, str]:
    """The downloadable files that are stored now: lora (diffusers), kohya, log → their keys."""
    files: dict[str, str] = {}
    lora = LoraModel.objects.filter(training_run=run).first()
    if lora is not None:
        for what, fmt in (("lora", "diffusers"), ("kohya", "kohya")):
            key = lora_key(lora, fmt)
            if key:
                files[what] = key
    if artifact_exists(log_key(run)):
        files["log"] = log_key(run)
    return files


def sample_prompts_for(albums, user) -> dict[int, str]:
    """{album id: a sample prompt}: the caption the album's first image trains with (else the album name),
    so the samples show what the run learns. Two queries for any number of albums."""
    albums = list(albums)
    first: dict[int, int] = {}
    rows = (Image.objects.visible_to(user).filter(album_entries__album__in=albums)
            .order_by("album_entries__album_id", "album_entries__position", "pk")
            .values_list("album_entries__album_id", "pk"))
    for album_id, image_id in rows:
        first.setdefault(album_id, image_id)
    captions = training_captions(list(first.values()))
    return {album.pk: (captions.get(first.get(album.pk), "") or album.name)[:MAX_SAMPLE_PROMPT] for album in albums}
