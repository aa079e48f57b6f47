"""Reads for training: who sees which run and LoRA, the loss chart, the log tail, the run's files."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.db.models import Q

from gallery.models import Album, Image
from labeling.selectors import training_captions

from ..models import BaseModel, LoraModel, TrainingRun
from .params import MAX_SAMPLE_PROMPT
from .services import LOG_NAME


def albums_for_training(user):
    """Albums a user may train on, with the count of images they may see (what a snapshot would take):
    their own; staff may use anyone's."""
    qs = Album.objects.all() if user.is_staff else Album.objects.filter(owner=user)
    return qs.with_counts(user).select_related("owner").order_by("owner__username", "name")


def runs_visible_to(user):
    """Runs a user may open: their own; staff see everyone's."""
    qs = TrainingRun.objects.select_related("base_model", "owner")
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
    path = run.run_dir / LOG_NAME
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return list(deque(handle, maxlen=lines))
    except OSError:
        return []


def sample_images(run: TrainingRun) -> list[dict]:
    """[{step, index, url}] newest first, for the files that still exist."""
    from django.urls import reverse

    found = []
    for entry in sorted(run.samples, key=lambda s: -int(s.get("step", 0))):
        for index, name in enumerate(entry.get("files", [])):
            if (run.run_dir / name).is_file():
                found.append({"step": entry["step"], "index": index,
                              "url": reverse("training:run_sample", args=[run.pk, entry["step"], index])})
    return found


def dataset_image_ids_visible_to(run: TrainingRun, user) -> set[int]:
    """The ids of the run's frozen dataset images that `user` may still see (gallery's visibility rule)."""
    ids = [entry.get("image_id") for entry in run.dataset if isinstance(entry.get("image_id"), int)]
    return set(Image.objects.visible_to(user).filter(pk__in=ids).values_list("pk", flat=True))


def artifact_path(run: TrainingRun, name: str | Path) -> Path | None:
    """`name` (absolute, or relative to the run's folder) as an existing file inside the run's own folder under
    MODELS_DIR, else None. Only files the run's job wrote are ever served: the names come from our own job,
    but a row is data, and a path anywhere else (the database, settings, another run) must never be."""
    if not name:
        return None
    root = run.run_dir.resolve()
    path = Path(name)
    path = (path if path.is_absolute() else root / path).resolve()  # resolve(): symlinks cannot lead out
    return path if path.is_relative_to(root) and path.is_file() else None


def lora_file(lora: LoraModel, fmt: str) -> Path | None:
    """The LoRA's file in `fmt` ("diffusers" or "kohya") when its run wrote it and it still exists."""
    name = {"diffusers": lora.diffusers_file, "kohya": lora.kohya_file}.get(fmt)
    if not name or lora.training_run is None:
        return None
    return artifact_path(lora.training_run, name)


def sample_path(run: TrainingRun, step: int, index: int) -> Path | None:
    for entry in run.samples:
        if int(entry.get("step", -1)) == step:
            files = entry.get("files", [])
            if 0 <= index < len(files):
                return artifact_path(run, files[index])
    return None


def run_files(run: TrainingRun) -> dict[str, Path]:
    """The downloadable files that exist now: lora (diffusers), kohya, log."""
    files: dict[str, Path] = {}
    lora = LoraModel.objects.filter(training_run=run).first()
    candidates = {"log": LOG_NAME}
    if lora is not None:
        candidates.update(lora=lora.diffusers_file, kohya=lora.kohya_file)
    for key, name in candidates.items():
        path = artifact_path(run, name)
        if path is not None:
            files[key] = path
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
