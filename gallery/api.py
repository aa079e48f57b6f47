"""Gallery JSON API: images and albums. Same access rules as the pages."""

from __future__ import annotations

from datetime import datetime

from ninja import File, Form, Router, Schema, Status, UploadedFile
from ninja.errors import HttpError
from ninja.pagination import paginate

from imagineer.api import Pagination

from . import access, services
from .imaging import ImageRejected, check_size
from .models import Album, Image, ImageSource

router = Router(tags=["gallery"])


class ImageOut(Schema):
    id: int
    owner: str
    title: str
    description: str
    width: int
    height: int
    format: str
    bytes: int
    sha256: str
    source: str
    source_url: str
    source_page_url: str
    is_public: bool
    is_nsfw: bool
    created_at: datetime
    url: str
    thumbnail_url: str
    download_url: str
    tags: list[str] = []
    training_caption: str = ""
    stack_top_id: int | None = None

    @staticmethod
    def resolve_owner(obj: Image) -> str:
        return obj.owner.get_username()

    @staticmethod
    def resolve_tags(obj: Image) -> list[str]:
        return _label_summary(obj).get("tags", [])

    @staticmethod
    def resolve_training_caption(obj: Image) -> str:
        return _label_summary(obj).get("training_caption", "")

    @staticmethod
    def resolve_url(obj: Image) -> str:
        return obj.get_absolute_url()

    @staticmethod
    def resolve_thumbnail_url(obj: Image) -> str:
        return obj.thumbnail_url()

    @staticmethod
    def resolve_download_url(obj: Image) -> str:
        return obj.download_url()


def _attach_label_summaries(images: list[Image]) -> list[Image]:
    """Read the tags and training captions of a page of images in one call of labeling's hook."""
    from . import hooks

    summaries = hooks.image_label_summaries([image.pk for image in images]) if hooks.image_label_summaries else {}
    for image in images:
        image._label_summary = summaries.get(image.pk, {})
    return images


def _label_summary(obj: Image) -> dict:
    """The image's tags and training caption (read for this image alone unless its page attached them)."""
    if not hasattr(obj, "_label_summary"):
        _attach_label_summaries([obj])
    return obj._label_summary


class ImagePagination(Pagination):
    """limit/offset pages whose images carry their labels, read for the whole page at once."""

    def paginate_queryset(self, queryset, pagination, request, **params):
        page = super().paginate_queryset(queryset, pagination, request, **params)
        page[self.items_attribute] = _attach_label_summaries(list(page[self.items_attribute]))
        return page


class UploadOut(Schema):
    image: ImageOut
    duplicate: bool


class AlbumOut(Schema):
    id: int
    name: str
    slug: str
    description: str
    owner: str
    is_public: bool
    is_training_source: bool
    image_count: int = 0

    @staticmethod
    def resolve_owner(obj: Album) -> str:
        return obj.owner.get_username()


class AlbumIn(Schema):
    name: str
    description: str = ""
    is_public: bool = False
    is_training_source: bool = False


class ImageIds(Schema):
    image_ids: list[int]


def _image(request, pk: int) -> Image:
    return access.image_or_404(request.user, pk)


def _album(request, pk: int, *, right: access.AlbumRight = "view") -> Album:
    return access.album_or_404(request.user, pk, right=right)


@router.get("/images", response=list[ImageOut], summary="Images you can see, newest first")
@paginate(ImagePagination)
def list_images(request, mine: bool = False, album: int | None = None, source: str = "", q: str = ""):
    qs = _album(request, album).images_visible_to(request.user) if album else Image.objects.visible_to(request.user)
    qs = qs.select_related("owner").order_by("-pk")
    if mine:
        qs = qs.filter(owner=request.user)
    if source:
        qs = qs.filter(source=source)
    if q:
        qs = qs.search(q)
    return qs


@router.get("/images/{image_id}", response=ImageOut)
def get_image(request, image_id: int):
    return _image(request, image_id)


@router.post("/images", response={201: UploadOut, 200: UploadOut}, summary="Upload one image")
def upload_image(request, file: File[UploadedFile], title: Form[str] = "", album: Form[int | None] = None,
                 stack: Form[bool] = False):
    """`stack`: put it under the stack of its closest near duplicate among your images, as the upload page can."""
    from django.conf import settings

    try:
        check_size(file.size, settings.GALLERY_MAX_UPLOAD_BYTES)
    except ImageRejected as exc:
        raise HttpError(413, str(exc))
    target = _album(request, album, right="add") if album else None
    try:
        result = services.image_ingest(owner=request.user, data=file.read(), filename=file.name or "",
                                       source=ImageSource.UPLOAD, title=title, album=target,
                                       stack_near_duplicates=stack)
    except services.StorageFailed as exc:
        raise HttpError(507, str(exc))
    except ImageRejected as exc:
        raise HttpError(400, str(exc))
    return Status(201 if result.created else 200, {"image": result.image, "duplicate": result.duplicate})


@router.get("/albums", response=list[AlbumOut])
@paginate(Pagination)
def list_albums(request, mine: bool = False):
    qs = Album.objects.visible_to(request.user).with_counts(request.user).select_related("owner").order_by("name")
    return qs.filter(owner=request.user) if mine else qs


@router.post("/albums", response={201: AlbumOut})
def create_album(request, payload: AlbumIn):
    try:
        album = services.album_create(owner=request.user, **payload.dict())
    except services.AlbumNameTaken as exc:
        raise HttpError(409, str(exc))
    return Status(201, album)


@router.post("/albums/{album_id}/images", response=AlbumOut,
             summary="Add images you can see to an album you own, contribute to or edit")
def add_album_images(request, album_id: int, payload: ImageIds):
    album = _album(request, album_id, right="add")
    visible = Image.objects.visible_to(request.user).filter(pk__in=payload.image_ids).values_list("pk", flat=True)
    services.album_add_images(album=album, images=list(visible))
    return Album.objects.with_counts(request.user).select_related("owner").get(pk=album.pk)


@router.post("/albums/{album_id}/images/remove", response=AlbumOut,
             summary="Remove images from an album you own or edit (the images themselves stay)")
def remove_album_images(request, album_id: int, payload: ImageIds):
    album = _album(request, album_id, right="remove")
    services.album_remove_images(album=album, ids=payload.image_ids)
    return Album.objects.with_counts(request.user).select_related("owner").get(pk=album.pk)
