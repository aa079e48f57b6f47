"""Writes for scraping: start and re-run scrape jobs (URL checks, settings); the crawl recorder in ``recorder``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction

from gallery.models import Album
from imagineer.jobs import enqueue_job, ensure_queue_available
from imagineer.quotas import quota_check

from ..models import OptOutPolicy, ScrapeJob, empty_counters
from ..urlsafety import UnresolvableHost, UnsafeURL, check_url, normalise_host
from .recorder import CrawlRecorder, scraped_filename

logger = logging.getLogger(__name__)

# What a new scrape uses when the form or the command does not say.
DEFAULTS: dict[str, Any] = {
    "max_pages": 100,
    "max_images": 200,
    "depth": 2,
    "min_width": 64,
    "min_height": 64,
    "min_bytes": 1024,
    "obey_robots": True,
    "delay": 1.0,
    "autothrottle": True,
    "concurrency": 8,
    "download_timeout": 30.0,
    "optout_policy": OptOutPolicy.RESPECT,
}
LIMITS: dict[str, tuple[float, float]] = {
    "max_pages": (1, 100_000),
    "max_images": (1, 100_000),
    "depth": (0, 50),
    "min_width": (0, 30_000),
    "min_height": (0, 30_000),
    "min_bytes": (0, 50 * 1024 * 1024),
    "delay": (0, 60),
    "concurrency": (1, 32),
    "download_timeout": (1, 600),
}
MAX_DOMAINS = 20
class ScrapeInputError(ValueError):
    """The scrape cannot start as asked; the message says why, for a form or a command."""


# -- URL checks ------------------------------------------------------------------------------------------

def host_overrides_for_tests() -> dict[str, Any] | None:
    """Test DNS (settings.SCRAPE_TEST_HOST_OVERRIDES), honoured only where SCRAPE_ALLOW_PRIVATE is on."""
    overrides = getattr(settings, "SCRAPE_TEST_HOST_OVERRIDES", None)
    if overrides is None or not settings.SCRAPE_ALLOW_PRIVATE:
        return None
    return dict(overrides)


def _resolver() -> Callable[[str], list[str]] | None:
    overrides = host_overrides_for_tests()
    if overrides is None:
        return None  # the system resolver

    def resolve(host: str) -> list[str]:
        answer = overrides.get(host.lower().rstrip("."))
        if answer is None:
            raise UnresolvableHost(f"host {host!r} does not resolve")
        first = answer[0] if isinstance(answer, list) else answer
        return [a.strip() for a in first.split(",")]

    return resolve


def check_start_url(url: str) -> None:
    """Raise UnsafeURL (UnresolvableHost for DNS failures) unless a scrape may start at ``url``."""
    check_url(url, resolve=_resolver())


def start_url_problem(url: str) -> str | None:
    """Why the scraper must not start at ``url`` (scheme, host, non-public address), or None."""
    try:
        check_start_url(url)
    except UnsafeURL as exc:
        return str(exc)
    return None


def normalise_domains(domains: list[str] | str | None) -> list[str]:
    if isinstance(domains, str):
        domains = domains.replace(",", " ").split()
    out: list[str] = []
    for raw in domains or []:
        raw = raw.strip().strip(".")
        if not raw:
            continue
        if "://" in raw:
            raw = urlsplit(raw).hostname or ""
        try:
            host = normalise_host(f"http://{raw}/")[1]
        except UnsafeURL:
            raise ScrapeInputError(f"{raw!r} is not a domain name.") from None
        if host not in out:
            out.append(host)
    if len(out) > MAX_DOMAINS:
        raise ScrapeInputError(f"At most {MAX_DOMAINS} allowed domains.")
    return out


# -- starting jobs ---------------------------------------------------------------------------------------

def _options(options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ScrapeInputError(f"Unknown scrape settings: {', '.join(sorted(unknown))}.")
    values = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    for name, (low, high) in LIMITS.items():
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ScrapeInputError(f"{name.replace('_', ' ')} must be between {low:g} and {high:g}.")
        values[name] = int(value) if isinstance(DEFAULTS[name], int) else float(value)
    if values["optout_policy"] not in OptOutPolicy.values:
        raise ScrapeInputError(f"The opt-out policy is one of {', '.join(OptOutPolicy.values)}.")
    values["obey_robots"] = bool(values["obey_robots"])
    values["autothrottle"] = bool(values["autothrottle"])
    return values


def scrape_job_start(
    *,
    user,
    start_url: str,
    album: Album | None = None,
    album_name: str = "",
    allowed_domains: list[str] | str | None = None,
    enqueue: bool = True,
    rerun_of: ScrapeJob | None = None,
    **options: Any,
) -> ScrapeJob:
    """Create a scrape job for ``user`` and queue it (on commit) for the `scrape` worker.

    The target is ``album`` (one of the user's) or a new album named ``album_name`` (default: the
    site's host), created when the first image arrives. ``options``: the keys of ``DEFAULTS``.
    Raises ScrapeInputError for a refused URL or bad settings, QuotaExceeded when the user already has
    MAX_ACTIVE_SCRAPES_PER_USER (or their override) queued or running, QueueUnavailable when Redis is down;
    in every case nothing is created.
    """
    values = _options(options)
    if values["optout_policy"] == OptOutPolicy.IGNORE and not user.is_staff:
        # Publishers' opt-outs are honoured unless an administrator decides otherwise for a scrape.
        raise ScrapeInputError("Only staff may ignore publishers' AI opt-outs.")
    domains = normalise_domains(allowed_domains)
    if album is not None and album.owner_id != user.pk:
        raise ScrapeInputError("The target album must be one of your albums.")
    start_url = (start_url or "").strip()
    problem = start_url_problem(start_url)
    if problem:
        raise ScrapeInputError(f"This URL cannot be scraped: {problem}.")
    album_name = (album.name if album is not None else album_name.strip()) or normalise_host(start_url)[1]
    if len(album_name) > 200:
        raise ScrapeInputError("Album names are at most 200 characters.")
    if enqueue:
        ensure_queue_available()
    with transaction.atomic():
        if enqueue:
            quota_check(user=user, model=ScrapeJob)  # raises QuotaExceeded
        job = ScrapeJob.objects.create(
            owner=user, start_url=start_url, album=album, album_name=album_name, allowed_domains=domains,
            counters=empty_counters(), message="Waiting for a worker…", rerun_of=rerun_of, **values,
        )
        if enqueue:
            enqueue_job(job)
    return job


def scrape_job_rerun(*, job: ScrapeJob, user, enqueue: bool = True) -> ScrapeJob:
    """The same scrape again, as a new job (images already in the gallery come back as duplicates)."""
    if job.owner_id != user.pk:
        raise ScrapeInputError("Only the person who started a scrape can run it again.")
    album = job.album if job.album_id and job.album.owner_id == user.pk else None
    return scrape_job_start(
        user=user, start_url=job.start_url, album=album, album_name=job.album_name,
        allowed_domains=list(job.allowed_domains or []), enqueue=enqueue, rerun_of=job,
        **{name: getattr(job, name) for name in DEFAULTS},
    )


__all__ = [
    "DEFAULTS", "LIMITS", "CrawlRecorder", "ScrapeInputError", "check_start_url", "host_overrides_for_tests",
    "normalise_domains", "scrape_job_rerun", "scrape_job_start", "scraped_filename", "start_url_problem",
]
