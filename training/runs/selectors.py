"""Reads for training: who sees which run and LoRA, the loss chart, the log tail, the run's files."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.db.models import Q

from gallery.models import Album

from ..models import BaseModel, LoraModel, TrainingRun
from .services import LOG_NAME


def albums_for_training(user):
    """Albums a user may train on, with image counts: their own; staff may use anyone's."""
    qs = Album.objects.all() if user.is_staff else Album.objects.filter(owner=user)
    return qs.with_counts().select_related("owner").order_by("owner__username", "name")


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


def sample_path(run: TrainingRun, step: int, index: int) -> Path | None:
    for entry in run.samples:
        if int(entry.get("step", -1)) == step:
            files = entry.get("files", [])
            if 0 <= index < len(files):
                path = (run.run_dir / files[index]).resolve()
                # The names come from our own job, but the row is data: never leave the run folder.
                if path.is_relative_to(run.run_dir.resolve()) and path.is_file():
                    return path
    return None


def run_files(run: TrainingRun) -> dict[str, Path]:
    """The downloadable files that exist now: lora (diffusers), kohya, log."""
    files: dict[str, Path] = {}
    lora = LoraModel.objects.filter(training_run=run).first()
    if lora is not None:
        for key, name in (("lora", lora.diffusers_file), ("kohya", lora.kohya_file)):
            if name and Path(name).is_file():
                files[key] = Path(name)
    log = run.run_dir / LOG_NAME
    if log.is_file():
        files["log"] = log
    return files
