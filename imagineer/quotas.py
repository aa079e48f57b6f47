"""Per-user limits on queued plus running jobs, and the ceilings on what one request may cost.

The single place that says how many jobs of a kind a user may have waiting or running at once. The site
default comes from settings (IMAGINEER_MAX_ACTIVE_TRAINING, _LABELING, _SCRAPES and, for generations,
IMAGINEER_GENERATE_MAX_QUEUED); staff override it per user in the admin (`UserLimits`, also inline on the
user). A Job model takes part by naming its `quota_kind`.

Services call `quota_check` inside the transaction that creates (or re-queues) the row. It locks the user's
row first, so one user's simultaneous requests are counted one after the other and cannot all slip under
the limit (PostgreSQL; SQLite serialises writers anyway).

Staff are not exempt. The limits protect the shared workers (a GPU trains one run at a time, so a long
queue of one person's runs is hours of everyone else waiting), and an administrator who needs more gives
their own account an override: a visible, deliberate choice rather than a silent bypass.

Only work handed to the shared workers is refused. A command's --inline run works in the caller's own
process, so it is not refused, but it counts against the limit while it is active.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection

from .models import Job, UserLimits


@dataclass(frozen=True)
class QuotaKind:
    kind: str
    setting: str  # the site default
    env: str  # where the default comes from
    field: str  # the override on UserLimits
    singular: str
    plural: str

    def noun(self, n: int) -> str:
        return f"{n} {self.singular if n == 1 else self.plural}"


KINDS: dict[str, QuotaKind] = {q.kind: q for q in [
    QuotaKind("training", "MAX_ACTIVE_TRAINING_PER_USER", "IMAGINEER_MAX_ACTIVE_TRAINING", "max_active_training",
              "training run", "training runs"),
    QuotaKind("labeling", "MAX_ACTIVE_LABELING_PER_USER", "IMAGINEER_MAX_ACTIVE_LABELING", "max_active_labeling",
              "labeling job", "labeling jobs"),
    QuotaKind("scraping", "MAX_ACTIVE_SCRAPES_PER_USER", "IMAGINEER_MAX_ACTIVE_SCRAPES", "max_active_scraping",
              "scrape", "scrapes"),
    QuotaKind("generation", "GENERATE_MAX_QUEUED_PER_USER", "IMAGINEER_GENERATE_MAX_QUEUED", "max_active_generation",
              "generation", "generations"),
]}


class QuotaExceeded(Exception):
    """The user already has as many jobs of this kind queued or running as they may. Nothing was created.

    Pages show the message; the API answers 429 with it; commands print it.
    """

    def __init__(self, *, kind: str, limit: int, active: int):
        self.kind, self.limit, self.active = kind, limit, active
        spec = KINDS[kind]
        if limit == 0:
            message = (f"Your account may not start {spec.plural} (the limit is 0). "
                       "Ask an administrator if you need to.")
        else:
            message = (f"You already have {spec.noun(active)} waiting or running (the limit is {limit}). "
                       "Wait for one to finish or cancel one, then try again.")
        super().__init__(message)


class CostTooHigh(ValueError):
    """One request asks for more work than the ceiling allows; `field` is the form field to show it next to."""

    def __init__(self, message: str, *, field: str):
        self.field = field
        super().__init__(message)


def default_limit(kind: str) -> int:
    return int(getattr(settings, KINDS[kind].setting))


def limit_for(user, kind: str) -> int:
    """The user's limit for this kind of job: their override, else the site default."""
    override = UserLimits.objects.filter(user_id=user.pk).values_list(KINDS[kind].field, flat=True).first()
    return default_limit(kind) if override is None else int(override)


def active_jobs(user, model: type[Job]):
    return model.objects.filter(owner_id=user.pk).active()


def quota_check(*, user, model: type[Job]) -> None:
    """Raise QuotaExceeded when the user may not have one more active `model` row. Call inside the transaction
    that then creates (or re-queues) the row, so the lock taken here holds until that row is written."""
    if not connection.in_atomic_block:
        raise RuntimeError("quota_check must run inside the transaction that creates the job")
    kind = model.quota_kind
    if kind not in KINDS:
        raise ValueError(f"{model.__name__} has no quota kind")
    # One user's concurrent requests queue one after the other here, so the count below cannot go stale.
    get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk", flat=True).first()
    limit = limit_for(user, kind)
    active = active_jobs(user, model).count()
    if active >= limit:
        raise QuotaExceeded(kind=kind, limit=limit, active=active)


@dataclass(frozen=True)
class Usage:
    kind: str
    label: str  # "training runs"
    active: int
    limit: int
    overridden: bool


def quota_usage(user) -> list[Usage]:
    """Each limited kind of job with how many the user has active and their limit (for the settings page)."""
    from .jobs import job_models  # the job plumbing imports models; keep this module's imports light

    overrides = UserLimits.objects.filter(user_id=user.pk).first()
    usage = []
    for model in job_models():
        spec = KINDS.get(model.quota_kind)
        if spec is None:
            continue
        override = getattr(overrides, spec.field, None) if overrides else None
        usage.append(Usage(kind=spec.kind, label=spec.plural, active=active_jobs(user, model).count(),
                           limit=default_limit(spec.kind) if override is None else override,
                           overridden=override is not None))
    return sorted(usage, key=lambda u: list(KINDS).index(u.kind))


# --- what one request may cost ---------------------------------------------------------------------------

def _millions(value: int) -> str:
    return f"{value / 1e6:,.1f}".removesuffix(".0")


def generation_cost_check(*, width: int, height: int, count: int, steps: int) -> None:
    """Raise CostTooHigh when one generation would hold the worker too long or need too much memory.

    Memory and the time of one denoising step grow with the pixels of the whole batch (width × height × count);
    the time of the request grows with that times the steps. Both have a ceiling, so a cancel is noticed within
    seconds (it is checked between steps) and one request cannot take the GPU's memory.
    """
    per_step = width * height * count
    step_limit = settings.GENERATE_MAX_PIXELS_PER_STEP
    if per_step > step_limit:
        raise CostTooHigh(
            f"{width}×{height} pixels × {count} image{'s' if count != 1 else ''} is {_millions(per_step)} megapixels "
            f"per denoising step; the limit is {_millions(step_limit)}. Make fewer images at once or smaller ones.",
            field="count")
    cost = per_step * steps
    limit = settings.GENERATE_MAX_COST
    if cost > limit:
        raise CostTooHigh(
            f"{width}×{height} pixels × {count} image{'s' if count != 1 else ''} × {steps} steps is "
            f"{_millions(cost)} million pixel-steps; the limit for one request is {_millions(limit)} million. "
            "Use fewer steps, fewer images or a smaller size.",
            field="steps")


def training_cost_check(*, steps: int, batch_size: int, resolution: int) -> None:
    """Raise CostTooHigh when one training run asks for more work than the ceiling (steps × batch × resolution²),
    or when one step would be so big that a cancel waits minutes for it."""
    per_step = batch_size * resolution * resolution
    step_limit = settings.TRAIN_MAX_PIXELS_PER_STEP
    if per_step > step_limit:
        raise CostTooHigh(
            f"A batch of {batch_size} at {resolution}×{resolution} is {_millions(per_step)} megapixels per step; "
            f"the limit is {_millions(step_limit)}. Lower the batch size or the resolution.",
            field="batch_size")
    cost = per_step * steps
    limit = settings.TRAIN_MAX_COST
    if cost > limit:
        raise CostTooHigh(
            f"{steps} steps × batch {batch_size} × {resolution}×{resolution} pixels is {_millions(cost)} million "
            f"pixels to train on; the limit for one run is {_millions(limit)} million. Use fewer steps, a smaller "
            "batch or a lower resolution.",
            field="steps")
