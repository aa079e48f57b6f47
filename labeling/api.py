"""Labeling JSON API: an image's labels (list, create, update, delete) and labeling jobs (start, status,
cancel). Same access rules as the pages: labels of images you cannot see, and jobs that are not yours,
are 404; changing labels needs an image whose captions you may edit (yours, or as an album's editor)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from django.http import Http404
from django.shortcuts import get_object_or_404
from ninja import Field, Router, Schema, Status
from ninja.errors import HttpError

from gallery import access
from gallery.models import Album, Image
from imagineer.jobs import QueueUnavailable, job_cancel
from imagineer.quotas import QuotaExceeded

from . import services
from .models import MACHINE_SOURCES, Label, LabelingJob, LabelKind

router = Router(tags=["labeling"])


class LabelOut(Schema):
    id: int
    image_id: int
    kind: str
    value: str
    source: str
    confidence: float | None
    model: str
    model_version: str
    review_state: str
    created_by: str | None
    reviewed_by: str | None
    created_at: datetime
    reviewed_at: datetime | None

    @staticmethod
    def resolve_created_by(obj: Label) -> str | None:
        return obj.created_by.get_username() if obj.created_by_id else None

    @staticmethod
    def resolve_reviewed_by(obj: Label) -> str | None:
        return obj.reviewed_by.get_username() if obj.reviewed_by_id else None


class LabelIn(Schema):
    kind: Literal["tag", "category", "caption"] = Field(
        description="A caption replaces your manual caption of the image; tags and categories are added.")
    value: str = Field(min_length=1, max_length=2000)


class LabelPatch(Schema):
    value: str | None = Field(None, min_length=1, max_length=2000,
                              description="New text: the label becomes your approved manual label.")
    review_state: Literal["approved", "rejected"] | None = Field(
        None, description="Accept or reject a machine label.")


class JobIn(Schema):
    backend: Literal["local", "tagger", "captioner", "claude-docker", "anthropic"]
    album_id: int | None = None
    image_ids: list[int] = Field(default_factory=list, max_length=10_000)
    force: bool = False


class JobOut(Schema):
    id: int
    backend: str
    album_id: int | None
    image_ids: list[int]
    force: bool
    status: str
    progress: float
    message: str
    error: str
    counters: dict
    image_errors: list
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def _visible_image(request, pk: int) -> Image:
    # The image page's rule: members of a shared album holding it read its labels too.
    return access.image_or_404(request.user, pk)


def _editable_image(request, pk: int) -> Image:
    image = get_object_or_404(Image, pk=pk)
    if not image.can_edit_captions(request.user):  # owner, staff, editors of a shared album holding it
        raise Http404
    return image


def _editable_label(request, pk: int) -> Label:
    label = get_object_or_404(Label.objects.select_related("image", "created_by", "reviewed_by"), pk=pk)
    if not label.image.can_edit_captions(request.user):
        raise Http404
    return label


def _job(request, pk: int) -> LabelingJob:
    job = get_object_or_404(LabelingJob, pk=pk)
    if not (request.user.is_staff or job.owner_id == request.user.pk):
        raise Http404
    return job


@router.get("/images/{image_id}/labels", response=list[LabelOut], summary="An image's labels")
def list_labels(request, image_id: int, kind: Literal["caption", "tag", "category", "nsfw"] | None = None):
    image = _visible_image(request, image_id)
    labels = Label.objects.filter(image=image).select_related("created_by", "reviewed_by").order_by("kind", "pk")
    return labels.filter(kind=kind) if kind else labels


@router.post("/images/{image_id}/labels", response={201: LabelOut},
             summary="Add a label to an image whose captions you may edit")
def create_label(request, image_id: int, payload: LabelIn):
    image = _editable_image(request, image_id)
    try:
        if payload.kind == LabelKind.CAPTION:
            label = services.caption_set(image=image, user=request.user, text=payload.value)
            if label is None:
                raise services.LabelInputError("A caption cannot be empty.")
        else:
            label = services.tag_add(image=image, user=request.user, value=payload.value, kind=payload.kind)
    except services.LabelInputError as exc:
        raise HttpError(400, str(exc))
    return Status(201, label)


@router.patch("/labels/{label_id}", response=LabelOut, summary="Edit, accept or reject a label")
def update_label(request, label_id: int, payload: LabelPatch):
    label = _editable_label(request, label_id)
    if payload.value is None and payload.review_state is None:
        raise HttpError(400, "Send a value, a review_state, or both.")
    if payload.review_state and label.source not in MACHINE_SOURCES:
        raise HttpError(400, "Only machine labels are reviewed; manual ones are approved already.")
    try:
        if payload.review_state:
            services.labels_review(user=request.user, ids=[label.pk], approve=payload.review_state == "approved")
            label.refresh_from_db()
        if payload.value is not None:
            services.label_update(label=label, user=request.user, value=payload.value)
    except services.LabelInputError as exc:
        raise HttpError(400, str(exc))
    return Label.objects.select_related("created_by", "reviewed_by").get(pk=label.pk)


@router.delete("/labels/{label_id}", response={204: None}, summary="Delete a label")
def delete_label(request, label_id: int):
    services.label_remove(label=_editable_label(request, label_id))
    return Status(204, None)


@router.post("/labeling/jobs", response={201: JobOut}, summary="Label an album or some of your images")
def start_job(request, payload: JobIn):
    album = None
    if payload.album_id is not None:
        album = Album.objects.filter(pk=payload.album_id).first()
        if album is None or not album.can_edit(request.user):
            raise Http404
    try:
        job = services.labeling_job_start(user=request.user, backend=payload.backend, album=album,
                                          image_ids=payload.image_ids, force=payload.force)
    except services.LabelInputError as exc:
        raise HttpError(400, str(exc))
    except QuotaExceeded as exc:
        raise HttpError(429, str(exc))
    except QueueUnavailable as exc:
        raise HttpError(503, str(exc))
    return Status(201, job)


@router.get("/labeling/jobs/{job_id}", response=JobOut, summary="A labeling job's status")
def job_status(request, job_id: int):
    return _job(request, job_id)


@router.post("/labeling/jobs/{job_id}/cancel", response=JobOut, summary="Cancel a labeling job")
def cancel_job(request, job_id: int):
    job = _job(request, job_id)
    job_cancel(job)
    job.refresh_from_db()
    return job
