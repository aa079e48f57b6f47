"""Review per image (a task view like Label Studio's): the picture large, all its labels beside it,
accept, edit or reject each or all, then on through the album (or through the images with pending labels)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST

from gallery.models import Album, Image

from . import selectors, services
from .models import MACHINE_SOURCES, Label, ReviewState


def _album_param(request: HttpRequest, params) -> Album | None:
    raw = params.get("album", "")
    if not raw:
        return None
    if not str(raw).isdigit():
        raise Http404("No such album.")
    album = Album.objects.filter(pk=int(raw)).first()
    if album is None or not album.can_edit_captions(request.user):  # owner, staff and the album's editors
        raise Http404("No such album.")
    return album


def _get_image_for_reviewer(request: HttpRequest, pk: int) -> Image:
    image = get_object_or_404(Image, pk=pk)
    if not image.can_edit_captions(request.user):  # owner, staff, editors of a shared album holding it
        raise Http404("No such image.")
    return image


def _sequence(request: HttpRequest, album: Album | None) -> list[int]:
    """The images the review walks through: the album's (whose captions the user may edit), else those with
    machine labels waiting for review, oldest first."""
    user = request.user
    if album is not None:
        return list(album.caption_editable_images(user).values_list("pk", flat=True))
    return sorted(set(selectors.review_queue(user).values_list("image_id", flat=True)))


def _neighbours(ids: list[int], pk: int) -> tuple[int | None, int | None]:
    if pk in ids:
        index = ids.index(pk)
        return (ids[index - 1] if index else None), (ids[index + 1] if index + 1 < len(ids) else None)
    # The image left the queue (all its labels decided): its neighbours by id.
    return max((i for i in ids if i < pk), default=None), min((i for i in ids if i > pk), default=None)


def _task_url(pk: int, album: Album | None) -> str:
    url = reverse("labeling:review_image", args=[pk])
    return f"{url}?{urlencode({'album': album.pk})}" if album else url


@login_required
@require_GET
def review_image_first(request: HttpRequest) -> HttpResponse:
    album = _album_param(request, request.GET)
    ids = _sequence(request, album)
    if not ids:
        messages.info(request, "Nothing to review.")
        return redirect("labeling:review")
    return redirect(_task_url(ids[0], album))


@login_required
@require_GET
def review_image(request: HttpRequest, pk: int) -> HttpResponse:
    image = _get_image_for_reviewer(request, pk)
    album = _album_param(request, request.GET)
    ids = _sequence(request, album)
    previous, following = _neighbours(ids, pk)
    labels = list(Label.objects.filter(image=image).select_related("reviewed_by")
                  .order_by("kind", "source", "-confidence", "value"))
    pending = [label for label in labels if label.is_machine and label.review_state == ReviewState.PENDING]
    return render(request, "labeling/review_image.html", {
        "image": image, "album": album, "labels": labels, "pending": len(pending),
        "position": ids.index(pk) + 1 if pk in ids else None, "count": len(ids),
        "previous_url": _task_url(previous, album) if previous else "",
        "next_url": _task_url(following, album) if following else "",
        "training_caption": selectors.training_captions([pk])[pk],
    })


@login_required
@require_POST
def review_image_decide(request: HttpRequest, pk: int) -> HttpResponse:
    image = _get_image_for_reviewer(request, pk)
    album = _album_param(request, request.POST)
    decision = request.POST.get("decision", "")
    own = Label.objects.filter(image=image)
    if decision in ("approve", "reject"):
        if request.POST.get("all"):
            ids = list(own.filter(source__in=MACHINE_SOURCES, review_state=ReviewState.PENDING)
                       .values_list("pk", flat=True))
        else:
            try:
                wanted = [int(i) for i in request.POST.getlist("ids")]
            except ValueError:
                wanted = []
            ids = list(own.filter(pk__in=wanted).values_list("pk", flat=True))  # only this image's labels
        count = services.labels_review(user=request.user, ids=ids, approve=decision == "approve")
        messages.success(request, f"{count} label{'s' if count != 1 else ''} "
                                  f"{'accepted' if decision == 'approve' else 'rejected'}.")
    elif decision == "edit":
        label = own.filter(pk=request.POST.get("label") or 0).first() if str(
            request.POST.get("label", "")).isdigit() else None
        if label is None:
            raise Http404("No such label.")
        try:
            services.label_update(label=label, user=request.user, value=request.POST.get("value", ""))
        except services.LabelInputError as exc:
            messages.error(request, str(exc))
            return redirect(_task_url(pk, album))
        messages.success(request, "Label edited.")
    else:
        messages.error(request, "Choose accept, reject or edit.")
        return redirect(_task_url(pk, album))
    if request.POST.get("advance"):
        _, following = _neighbours(_sequence(request, album), pk)
        if following:
            return redirect(_task_url(following, album))
        messages.info(request, "That was the last image.")
    return redirect(_task_url(pk, album))
