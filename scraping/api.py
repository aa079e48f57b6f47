"""Scraping JSON API: start, list, watch and cancel scrapes; their items. Same access rules as the pages."""

from __future__ import annotations

from datetime import datetime

from django.http import Http404
from django.shortcuts import get_object_or_404
from ninja import Router, Schema, Status
from ninja.errors import HttpError
from ninja.pagination import paginate

from gallery.models import Album
from imagineer.api import Pagination
from imagineer.jobs import QueueUnavailable, job_cancel
from imagineer.quotas import QuotaExceeded

from . import selectors, services
from .models import Outcome, ScrapeJob

router = Router(tags=["scraping"])


class ScrapeIn(Schema):
    start_url: str
    album_id: int | None = None
    album_name: str = ""
    max_pages: int | None = None
    max_images: int | None = None
    depth: int | None = None
    allowed_domains: list[str] = []
    min_width: int | None = None
    min_height: int | None = None
    min_bytes: int | None = None
    obey_robots: bool | None = None
    delay: float | None = None
    autothrottle: bool | None = None
    optout_policy: str | None = None


class ScrapeOut(Schema):
    id: int
    start_url: str
    album_id: int | None
    album_name: str
    status: str
    stage: str
    progress: float
    message: str
    error: str
    counters: dict
    error_buckets: dict
    crawl_reason: str
    limits_hit: list
    max_pages: int
    max_images: int
    depth: int
    allowed_domains: list
    optout_policy: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    pages_per_second: float | None
    images_per_second: float | None
    url: str

    @staticmethod
    def resolve_duration_s(obj: ScrapeJob) -> float | None:
        return obj.duration.total_seconds() if obj.duration is not None else None

    @staticmethod
    def resolve_url(obj: ScrapeJob) -> str:
        return obj.get_absolute_url()


class ItemOut(Schema):
    id: int
    seq: int
    url: str
    final_url: str
    page_url: str
    alt: str
    title: str
    outcome: str
    reason: str
    bucket: str
    http_status: int | None
    image_id: int | None
    width: int | None
    height: int | None
    format: str
    optout: list
    licence_hints: list
    fetched_at: datetime | None


def _job(request, pk: int) -> ScrapeJob:
    job = get_object_or_404(ScrapeJob, pk=pk)
    if job.owner_id != request.user.pk and not request.user.is_staff:
        raise Http404
    return job


@router.get("/scrapes", response=list[ScrapeOut], summary="Your scrapes, newest first")
@paginate(Pagination)
def list_scrapes(request):
    return selectors.jobs_for_user(request.user)


@router.post("/scrapes", response={201: ScrapeOut}, summary="Start a scrape")
def start_scrape(request, payload: ScrapeIn):
    data = payload.dict()
    album = None
    album_id = data.pop("album_id")
    if album_id is not None:
        album = Album.objects.filter(pk=album_id, owner=request.user).first()
        if album is None:
            raise HttpError(404, "No such album of yours.")
    try:
        job = services.scrape_job_start(user=request.user, album=album, **data)
    except services.ScrapeInputError as exc:
        raise HttpError(400, str(exc))
    except QuotaExceeded as exc:
        raise HttpError(429, str(exc))
    except QueueUnavailable as exc:
        raise HttpError(503, str(exc))
    return Status(201, job)


class DomainStatsOut(Schema):
    domain: str
    jobs: int
    imported: int
    duplicates: int
    failed: int
    opted_out: int


class HistoryStatsOut(Schema):
    jobs: int
    seconds: float
    pages: int
    downloaded: int
    pages_per_second: float | None
    images_per_second: float | None
    domains: list[DomainStatsOut]


@router.get("/scrapes/stats", response=HistoryStatsOut,
            summary="Your scrape history: average throughput and outcomes per image host")
def scrape_stats(request):
    return selectors.history_stats(request.user)


@router.get("/scrapes/{job_id}", response=ScrapeOut)
def get_scrape(request, job_id: int):
    return _job(request, job_id)


@router.post("/scrapes/{job_id}/cancel", response=ScrapeOut, summary="Ask a scrape to stop")
def cancel_scrape(request, job_id: int):
    job = _job(request, job_id)
    job_cancel(job)
    job.refresh_from_db()
    return job


@router.get("/scrapes/{job_id}/items", response=list[ItemOut], summary="Every image URL the scrape found")
@paginate(Pagination)
def list_items(request, job_id: int, outcome: str = ""):
    if outcome and outcome not in Outcome.values:
        raise HttpError(400, f"outcome is one of {', '.join(Outcome.values)}")
    return selectors.job_items(_job(request, job_id), outcome=outcome).select_related(None)
