"""Scraping pages: start a scrape, the job history, a job's live progress and its items; cancel and re-run."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from imagineer.artifacts import artifact_open
from imagineer.jobs import QueueUnavailable, job_cancel
from imagineer.quotas import QuotaExceeded

from . import selectors, services
from .forms import ItemFilterForm, ScrapeStartForm
from .models import ScrapeJob

JOBS_PER_PAGE = 25
ITEMS_PER_PAGE = 50


def _get_job_for_user(request: HttpRequest, pk: int, *, own: bool = False) -> ScrapeJob:
    """The job if it is the user's (or, to look at, the user is staff); anyone else gets a 404."""
    job = get_object_or_404(ScrapeJob.objects.select_related("album", "owner"), pk=pk)
    if job.owner_id != request.user.pk and (own or not request.user.is_staff):
        raise Http404("No such scrape.")
    return job


def _index(request: HttpRequest, form: ScrapeStartForm, *, status: int = 200) -> HttpResponse:
    page = Paginator(selectors.jobs_for_user(request.user), JOBS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "scraping/index.html", {"form": form, "page": page, "jobs": page.object_list,
                                                   "stats": selectors.history_stats(request.user)},
                  status=status)


@login_required
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return _index(request, ScrapeStartForm(user=request.user))


@login_required
@require_POST
def start(request: HttpRequest) -> HttpResponse:
    form = ScrapeStartForm(request.POST, user=request.user)
    if not form.is_valid():
        return _index(request, form, status=400)
    try:
        job = services.scrape_job_start(user=request.user, **form.service_arguments())
    except QuotaExceeded as exc:
        form.add_error(None, str(exc))
        return _index(request, form, status=429)
    except (services.ScrapeInputError, QueueUnavailable) as exc:
        form.add_error(None, str(exc))
        return _index(request, form, status=400)
    messages.success(request, "Scrape started.")
    return redirect(job)


def _items_context(request: HttpRequest, job: ScrapeJob) -> dict:
    form = ItemFilterForm(request.GET)
    form.is_valid()  # a bad value drops that filter only: cleaned_data keeps the fields that were valid
    filters = form.cleaned_data
    outcome = filters.get("outcome") or ""
    page = Paginator(selectors.job_items(job, outcome=outcome), ITEMS_PER_PAGE).get_page(filters.get("page"))
    counts = selectors.outcome_counts(job)
    return {"job": job, "items": page.object_list, "items_page": page, "outcome": outcome,
            "outcome_counts": counts, "total_items": sum(n for _value, _label, n in counts)}


@login_required
@require_GET
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = _get_job_for_user(request, pk)
    if request.htmx:
        return render(request, "scraping/_job_status.html", {"job": job})
    return render(request, "scraping/job_detail.html", {**_items_context(request, job),
                                                        "can_rerun": job.owner_id == request.user.pk})


@login_required
@require_GET
def job_items(request: HttpRequest, pk: int) -> HttpResponse:
    job = _get_job_for_user(request, pk)
    template = "scraping/_items.html" if request.htmx else "scraping/job_detail.html"
    return render(request, template, {**_items_context(request, job), "can_rerun": job.owner_id == request.user.pk})


@login_required
@require_POST
def job_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    job = _get_job_for_user(request, pk)
    if job_cancel(job):
        messages.info(request, "Cancelling: the crawl stops within seconds; images already imported are kept.")
    if request.htmx:
        return render(request, "scraping/_job_status.html", {"job": job})
    return redirect(job)


@login_required
@require_POST
def job_rerun(request: HttpRequest, pk: int) -> HttpResponse:
    job = _get_job_for_user(request, pk, own=True)
    try:
        again = services.scrape_job_rerun(job=job, user=request.user)
    except (services.ScrapeInputError, QuotaExceeded, QueueUnavailable) as exc:
        messages.error(request, str(exc))
        return redirect(job)
    messages.success(request, "Running the scrape again; images already in the gallery count as duplicates.")
    return redirect(again)


@login_required
@require_GET
def job_log(request: HttpRequest, pk: int) -> HttpResponse:
    job = _get_job_for_user(request, pk)
    # From the artifacts storage: the worker that crawled may be another machine; it uploads as the log grows.
    try:
        log = artifact_open(job.log_key)
    except FileNotFoundError:
        raise Http404("This scrape has no log yet.") from None
    return FileResponse(log, as_attachment=True, filename=f"scrape-{job.pk}.log",
                        content_type="text/plain; charset=utf-8")
