"""Labeling pages: start jobs, watch them, review machine labels, edit labels, analytics, export."""

from __future__ import annotations

import shutil

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from gallery.models import Album, AlbumRole, Image
from imagineer.jobs import QueueUnavailable, job_cancel
from imagineer.quotas import QuotaExceeded

from . import selectors, services
from .forms import CaptionForm, ExportForm, StartJobForm, TagForm
from .models import Label, LabelingJob
from .panels import labels_panel


def _get_job_for_user(request: HttpRequest, pk: int) -> LabelingJob:
    job = get_object_or_404(LabelingJob.objects.select_related("album"), pk=pk)
    if not (request.user.is_staff or job.owner_id == request.user.pk):
        raise Http404("No such job.")
    return job


def _get_image_for_editor(request: HttpRequest, pk: int) -> Image:
    image = get_object_or_404(Image, pk=pk)
    if not image.can_edit_captions(request.user):  # owner, staff, editors of a shared album holding it
        raise Http404("No such image.")
    return image


def _get_label_for_editor(request: HttpRequest, pk: int) -> Label:
    label = get_object_or_404(Label.objects.select_related("image"), pk=pk)
    if not label.image.can_edit_captions(request.user):
        raise Http404("No such label.")
    return label


def _back(request: HttpRequest, fallback: str) -> str:
    target = request.POST.get("next") or request.META.get("HTTP_REFERER") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return fallback


@login_required
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    jobs = LabelingJob.objects.filter(owner=request.user).select_related("album")[:20]
    albums = Album.objects.filter(owner=request.user)
    # Caption tools open to the album's editors too (Album.can_edit_captions).
    edited = Album.objects.filter(members__user=request.user, members__role=AlbumRole.EDITOR).select_related("owner")
    return render(request, "labeling/index.html", {
        "jobs": jobs, "albums": albums, "edited_albums": edited, "form": StartJobForm(),
        "pending": selectors.review_queue(request.user).count(),
    })


@login_required
@require_POST
def job_start(request: HttpRequest) -> HttpResponse:
    form = StartJobForm(request.POST)
    fallback = reverse("labeling:index")
    if not form.is_valid():
        messages.error(request, "; ".join(e for errors in form.errors.values() for e in errors))
        return redirect(_back(request, fallback))
    album = None
    if form.cleaned_data.get("album"):
        album = Album.objects.filter(pk=form.cleaned_data["album"]).first()
        if album is None or not album.can_edit(request.user):
            raise Http404("No such album.")
    try:
        job = services.labeling_job_start(user=request.user, backend=form.cleaned_data["backend"], album=album,
                                          image_ids=form.cleaned_data["ids"], force=form.cleaned_data["force"])
    except (services.LabelInputError, QuotaExceeded, QueueUnavailable) as exc:
        messages.error(request, str(exc))
        return redirect(_back(request, fallback))
    messages.success(request, "Labeling started.")
    return redirect(job)


@login_required
@require_GET
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = _get_job_for_user(request, pk)
    template = "labeling/_job_status.html" if request.htmx else "labeling/job_detail.html"
    return render(request, template, {"job": job})


@login_required
@require_POST
def job_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    job = _get_job_for_user(request, pk)
    if job_cancel(job):
        messages.info(request, "Cancelling; labels already written are kept.")
    if request.htmx:
        return render(request, "labeling/_job_status.html", {"job": job})
    return redirect(job)


def _review_context(request: HttpRequest, params) -> dict:
    labels = selectors.review_queue(request.user)
    kind = params.get("kind", "")
    if kind:
        labels = labels.filter(kind=kind)
    page = Paginator(labels, 60).get_page(params.get("page"))
    return {"page": page, "kind": kind, "total": page.paginator.count}


@login_required
@require_GET
def review(request: HttpRequest) -> HttpResponse:
    template = "labeling/_review_list.html" if request.htmx else "labeling/review.html"
    return render(request, template, _review_context(request, request.GET))


@login_required
@require_POST
def review_action(request: HttpRequest) -> HttpResponse:
    try:
        ids = [int(i) for i in request.POST.getlist("ids")]
    except ValueError:
        ids = []
    approve = request.POST.get("decision") == "approve"
    count = services.labels_review(user=request.user, ids=ids, approve=approve)
    if request.htmx:
        context = _review_context(request, request.POST)
        context["notice"] = f"{count} label(s) {'approved' if approve else 'rejected'}."
        return render(request, "labeling/_review_list.html", context)
    messages.success(request, f"{count} label(s) {'approved' if approve else 'rejected'}.")
    return redirect(_back(request, reverse("labeling:review")))


def _panel_response(request: HttpRequest, image: Image, *, error: str = "") -> HttpResponse:
    if request.htmx:
        context = {"panel": labels_panel(request, image), "panel_error": error}
        return render(request, "labeling/_labels_panel.html", context, status=400 if error else 200)
    if error:
        messages.error(request, error)
    return redirect(image)


@login_required
@require_POST
def tag_add(request: HttpRequest, pk: int) -> HttpResponse:
    image = _get_image_for_editor(request, pk)
    form = TagForm(request.POST)
    if not form.is_valid():
        return _panel_response(request, image, error="Enter a tag of at most 64 characters.")
    try:
        services.tag_add(image=image, user=request.user, value=form.cleaned_data["value"],
                         kind=form.cleaned_data.get("kind") or "tag")
    except services.LabelInputError as exc:
        return _panel_response(request, image, error=str(exc))
    return _panel_response(request, image)


@login_required
@require_POST
def caption_set(request: HttpRequest, pk: int) -> HttpResponse:
    image = _get_image_for_editor(request, pk)
    form = CaptionForm(request.POST)
    if not form.is_valid():
        return _panel_response(request, image, error="Captions are at most 2000 characters.")
    services.caption_set(image=image, user=request.user, text=form.cleaned_data["text"])
    return _panel_response(request, image)


@login_required
@require_POST
def label_edit(request: HttpRequest, pk: int) -> HttpResponse:
    label = _get_label_for_editor(request, pk)
    try:
        services.label_update(label=label, user=request.user, value=request.POST.get("value", ""))
    except services.LabelInputError as exc:
        return _panel_response(request, label.image, error=str(exc))
    return _panel_response(request, label.image)


@login_required
@require_POST
def label_delete(request: HttpRequest, pk: int) -> HttpResponse:
    label = _get_label_for_editor(request, pk)
    image = label.image
    services.label_remove(label=label)
    return _panel_response(request, image)


@login_required
@require_GET
def tag_suggest(request: HttpRequest) -> HttpResponse:
    tags = selectors.all_tags(request.GET.get("value", "") or request.GET.get("q", ""), user=request.user)
    return render(request, "labeling/_tag_options.html", {"tags": tags})


@login_required
@require_GET
def analytics(request: HttpRequest) -> HttpResponse:
    albums = Album.objects.visible_to(request.user).filter(Q(owner=request.user) | Q(is_public=True))
    album = None
    images = Image.objects.visible_to(request.user)
    if not request.user.is_staff:
        images = images.filter(owner=request.user)
    album_id = request.GET.get("album", "")
    if album_id.isdigit():
        album = get_object_or_404(albums, pk=int(album_id))
        images = album.images_visible_to(request.user).order_by()
    return render(request, "labeling/analytics.html", {
        "stats": selectors.analytics(images), "album": album, "albums": albums.filter(owner=request.user),
        "export_form": ExportForm(),
    })


@login_required
@require_GET
def export(request: HttpRequest, pk: int) -> HttpResponse:
    album = get_object_or_404(Album, pk=pk)
    if not album.can_edit(request.user):
        raise Http404("No such album.")
    form = ExportForm(request.GET)
    if not form.is_valid():
        messages.error(request, "Choose kohya or jsonl.")
        return redirect(f"{reverse('labeling:analytics')}?album={album.pk}")
    work = services.export_work_dir()
    try:
        archive = services.dataset_zip(album=album, user=request.user, fmt=form.cleaned_data["format"],
                                       append_tags=form.cleaned_data["append_tags"], work_dir=work)
        handle = open(archive, "rb")  # noqa: SIM115 - FileResponse closes it
    except Exception:
        shutil.rmtree(work, ignore_errors=True)
        raise
    # The folder goes once the file is open; on Linux the open handle keeps the data readable.
    shutil.rmtree(work, ignore_errors=True)
    return FileResponse(handle, as_attachment=True, filename=archive.name, content_type="application/zip")
