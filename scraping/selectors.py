"""Reads for the scraping pages, the command and the API."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from .models import Outcome, ScrapedItem, ScrapeJob


def jobs_for_user(user) -> QuerySet[ScrapeJob]:
    """The user's own scrape jobs, newest first (staff see everyone's in the admin)."""
    return ScrapeJob.objects.filter(owner=user).select_related("album").order_by("-created_at", "-pk")


def job_items(job: ScrapeJob, *, outcome: str = "") -> QuerySet[ScrapedItem]:
    items = ScrapedItem.objects.filter(job=job).select_related("image").order_by("seq")
    if outcome:
        items = items.filter(outcome=outcome)
    return items


def outcome_counts(job: ScrapeJob) -> list[tuple[str, str, int]]:
    """(outcome, label, count) for every outcome the job's items have, in the order of Outcome."""
    counts = dict(ScrapedItem.objects.filter(job=job).values_list("outcome").annotate(n=Count("pk")))
    return [(value, label, counts[value]) for value, label in Outcome.choices if counts.get(value)]

