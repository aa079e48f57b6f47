"""How long a run will take, from the speed earlier runs measured on this installation.

Every finished run keeps its training speed (TrainingRun.steps_per_second, sample images not counted) and
its wall-clock times. The create page turns those into "about 4 minutes" for the model, size, batch and
step count chosen: the hardware a run lands on is whatever the `train` workers of this installation are,
so only their own past runs say anything about it.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from imagineer.models import JobStatus

from ..models import BaseModel, TrainingRun

# The latest runs of a model and size make the measurement: recent enough to follow a hardware change,
# several so that one odd run does not decide.
RECENT_RUNS = 5


@dataclass(frozen=True)
class Measurement:
    steps_per_second: float  # at `batch_size`
    resolution: int
    batch_size: int
    overhead_seconds: float  # loading, checkpoints, samples and saving, per run
    runs: int


@dataclass(frozen=True)
class Estimate:
    seconds: float | None
    measurement: Measurement | None
    steps_per_second: float | None  # the measured speed scaled to the batch size asked for

    @property
    def text(self) -> str:
        if self.measurement is None or self.seconds is None:
            return ""
        return about(self.seconds)


def measured_speed(base_model: BaseModel, resolution: int, batch_size: int | None = None) -> Measurement | None:
    """The speed of this installation's latest finished runs of `base_model` at `resolution`, preferring
    runs with the same batch size; None before the first such run has finished."""
    runs = (TrainingRun.objects.filter(base_model=base_model, resolution=resolution, status=JobStatus.SUCCEEDED,
                                       steps_per_second__gt=0)
            .order_by("-finished_at", "-pk")
            .values("steps_per_second", "batch_size", "step", "started_at", "finished_at", "resumed_from"))
    rows = list(runs[:50])
    if not rows:
        return None
    same = [r for r in rows if r["batch_size"] == batch_size]
    if same:
        rows = same
    else:
        # Another batch size: compare at the commonest one measured (steps/s then scale by batch).
        common = statistics.mode(r["batch_size"] for r in rows)
        rows = [r for r in rows if r["batch_size"] == common]
    rows = rows[:RECENT_RUNS]
    overheads = []
    for r in rows:
        if r["started_at"] and r["finished_at"] and not r["resumed_from"]:
            wall = (r["finished_at"] - r["started_at"]).total_seconds()
            overheads.append(max(0.0, wall - r["step"] / r["steps_per_second"]))
    return Measurement(
        steps_per_second=statistics.median(r["steps_per_second"] for r in rows),
        resolution=resolution,
        batch_size=rows[0]["batch_size"],
        overhead_seconds=statistics.median(overheads) if overheads else 0.0,
        runs=len(rows),
    )


def estimate(*, base_model: BaseModel | None, resolution: int | None, steps: int | None,
             batch_size: int | None) -> Estimate:
    """The expected duration of a run; Estimate(None, None, None) when nothing was measured or the settings
    are incomplete."""
    if base_model is None or not resolution or not steps or not batch_size:
        return Estimate(None, None, None)
    measurement = measured_speed(base_model, resolution, batch_size)
    if measurement is None:
        return Estimate(None, None, None)
    # A step of a bigger batch does proportionally more work: a fair first guess for another batch size.
    speed = measurement.steps_per_second * measurement.batch_size / batch_size
    return Estimate(steps / speed + measurement.overhead_seconds, measurement, speed)


def about(seconds: float) -> str:
    """'less than a minute', 'about a minute', 'about 12 minutes', 'about 2 hours 10 minutes'."""
    if seconds < 45:
        return "less than a minute"
    minutes = round(seconds / 60)
    if minutes <= 1:
        return "about a minute"
    if minutes < 60:
        return f"about {minutes} minutes"
    hours, rest = divmod(minutes, 60)
    text = f"about {hours} hour{'s' if hours > 1 else ''}"
    return text + (f" {rest} minute{'s' if rest > 1 else ''}" if rest else "")
