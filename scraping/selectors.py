"""Reads for the scraping pages, the command and the API."""

from __future__ import annotations

from urllib.parse import urlsplit

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



DOMAIN_COUNTERS = ("imported", "duplicates", "failed", "opted_out")


def history_stats(user) -> dict:
    """Figures over the user's finished scrapes: average throughput across the history (total pages and
    downloaded images over the total crawl time) and, per image host (where the images came from, a CDN
    included; "jobs" is how many scrapes brought images from it), imported / duplicate / failed / opted-out
    counts.
    """
    rows = (ScrapeJob.objects.filter(owner=user, started_at__isnull=False, finished_at__isnull=False)
            .values_list("start_url", "counters", "started_at", "finished_at"))
    seconds = pages = downloaded = jobs = 0
    domains: dict[str, dict[str, int]] = {}
    for start_url, counters, started, finished in rows.iterator():
        counters = counters or {}
        jobs += 1
        seconds += max((finished - started).total_seconds(), 0.0)
        pages += int(counters.get("pages") or 0)
        downloaded += int(counters.get("downloaded") or 0)
        hosts = counters.get("hosts")
        if not isinstance(hosts, dict):  # a job recorded before per-host counts: all under its start site
            hosts = {urlsplit(start_url).hostname or start_url: counters}
        for host, counts in hosts.items():
            if not isinstance(counts, dict):
                continue
            entry = domains.setdefault(str(host), {"jobs": 0, **dict.fromkeys(DOMAIN_COUNTERS, 0)})
            entry["jobs"] += 1
            for key in DOMAIN_COUNTERS:
                entry[key] += int(counts.get(key) or 0)
    return {
        "jobs": jobs,
        "seconds": round(seconds, 3),
        "pages": pages,
        "downloaded": downloaded,
        "pages_per_second": pages / seconds if seconds > 0 else None,
        "images_per_second": downloaded / seconds if seconds > 0 else None,
        "domains": sorted(({"domain": d, **c} for d, c in domains.items()), key=lambda r: (-r["jobs"], r["domain"])),
    }
