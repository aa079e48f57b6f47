"""Shared rows: the abstract Job, maintenance history and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import ClassVar

from django.conf import settings
from django.db import models
from django.utils import timezone


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)
FINISHED_STATUSES = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class JobQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status__in=ACTIVE_STATUSES)

    def finished(self):
        return self.filter(status__in=FINISHED_STATUSES)

    def stale(self, *, now=None):
        return self.filter(stale_condition(now=now))


def stale_condition(*, now=None) -> models.Q:
    """A running row whose heartbeat stopped (or never started) more than JOB_STALE_AFTER ago.

    Only the row's own columns, so a conditional UPDATE re-checks it against the row it locks
    (run_job's claim relies on that).
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.JOB_STALE_AFTER)
    return models.Q(status=JobStatus.RUNNING) & (
        models.Q(heartbeat_at__lt=cutoff) | models.Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    )


class Job(models.Model):
    """A long task: one row the pages poll, plus an RQ job that receives only the row's id.

    Subclasses set `queue_name` and `job_function` (dotted path of the RQ entry
    point, which takes the primary key) and may set `resumable` when a stale run
    can be handed back to the queue (training resumes from its checkpoint), and `quota_kind` when a
    user's queued plus running rows are limited (see imagineer.quotas).
    """

    queue_name: ClassVar[str] = "default"
    job_function: ClassVar[str] = ""
    resumable: ClassVar[bool] = False
    # Which per-user limit of imagineer.quotas counts these rows ("training", "labeling", ...); "" for none.
    quota_kind: ClassVar[str] = ""

    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True)
    progress = models.FloatField(default=0.0, help_text="0..1")
    message = models.CharField(max_length=500, blank=True, help_text="What the job is doing now.")
    error = models.TextField(blank=True, help_text="Why the job failed, in words a user can act on.")
    counters = models.JSONField(default=dict, blank=True)
    rq_job_id = models.CharField(max_length=100, blank=True, db_index=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="How many times a worker picked this job up.")

    objects = JobQuerySet.as_manager()

    class Meta:
        abstract = True

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def progress_percent(self) -> int:
        return max(0, min(100, round(self.progress * 100)))

    @property
    def duration(self) -> timedelta | None:
        if not self.started_at:
            return None
        return (self.finished_at or timezone.now()) - self.started_at

    @property
    def queue_wait(self) -> timedelta | None:
        if not self.started_at:
            return None
        return self.started_at - self.created_at

    def can_resume(self) -> bool:
        """Whether a run whose worker died can be handed back to the queue (it resumes, e.g. from a checkpoint)."""
        return self.resumable

    @classmethod
    def job_label(cls) -> str:
        return f"{cls._meta.app_label}.{cls._meta.model_name}"


class MaintenanceOutcome(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class MaintenanceRun(models.Model):
    """One run of a maintenance command (index_images, purge_trash, reap_jobs, ...)."""

    name = models.CharField(max_length=100, db_index=True)
    arguments = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=MaintenanceOutcome.choices, default=MaintenanceOutcome.RUNNING)
    counts = models.JSONField(default=dict, blank=True)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"{self.name} at {self.started_at:%Y-%m-%d %H:%M:%S}"

    @property
    def duration(self) -> timedelta | None:
        return (self.finished_at - self.started_at) if self.finished_at else None


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def usable(self):
        return self.filter(revoked_at__isnull=True, user__is_active=True)


class ApiToken(models.Model):
    """A per-user bearer token for the JSON API. Only its SHA-256 is stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What the token is for, e.g. 'training script'.")
    prefix = models.CharField(max_length=16, help_text="The first characters, shown so a token can be recognised.")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @staticmethod
    def generate_raw() -> str:
        return settings.API_TOKEN_PREFIX + secrets.token_urlsafe(32)


class UserLimits(models.Model):
    """Per-user overrides of the limits on queued plus running jobs (imagineer.quotas); empty means the default.

    Staff set these in the admin, e.g. to let one person queue more training runs or to stop another
    starting scrapes (0).
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="job_limits")
    max_active_training = models.PositiveIntegerField(
        null=True, blank=True, verbose_name="training runs",
        help_text="Training runs this user may have queued or running at once. Empty: the site default; "
        "0: none.")
    max_active_labeling = models.PositiveIntegerField(
        null=True, blank=True, verbose_name="labeling jobs",
        help_text="Labeling jobs this user may have queued or running at once. Empty: the site default; 0: none.")
    max_active_scraping = models.PositiveIntegerField(
        null=True, blank=True, verbose_name="scrapes",
        help_text="Scrapes this user may have queued or running at once. Empty: the site default; 0: none.")
    max_active_generation = models.PositiveIntegerField(
        null=True, blank=True, verbose_name="generations",
        help_text="Generations this user may have queued or running at once. Empty: the site default; 0: none.")
    note = models.CharField(max_length=300, blank=True, help_text="Why this user has other limits (staff only).")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "job limits"
        verbose_name_plural = "job limits"

    def __str__(self) -> str:
        return f"Job limits of {self.user}"
