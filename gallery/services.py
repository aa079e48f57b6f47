"""Writes for images and albums. Every path that brings an image in calls `image_ingest`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, models, transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.text import slugify

from . import neardup
from .imaging import Derivatives, ImageInfo, ImageRejected, inspect_image
from .models import Album, AlbumImage, DerivativeStatus, Image, ImageSource

logger = logging.getLogger(__name__)

__all__ = ["ImageRejected", "IngestResult", "image_ingest"]


@dataclass
class IngestResult:
    image: Image
    created: bool

    @property
    def duplicate(self) -> bool:
        return not self.created


class StorageFailed(ImageRejected):
    pass


def original_name(info: ImageInfo) -> str:
    sha = info.sha256
    return f"originals/{sha[:2]}/{sha[2:4]}/{sha}{info.extension}"


def derivative_names(sha256: str) -> tuple[str, str]:
    return (f"thumbs/{sha256[:2]}/{sha256}_t.webp", f"previews/{sha256[:2]}/{sha256}_p.webp")


def _store(name: str, data: bytes) -> tuple[str, bool]:
    """Save content-addressed bytes; returns (stored name, whether this call created the file)."""
    try:
        if default_storage.exists(name):
            return name, False
        return default_storage.save(name, ContentFile(data)), True
    except OSError as exc:
        raise StorageFailed(f"The file could not be stored ({exc.strerror or exc}).") from exc


def _delete_unreferenced(names: list[str]) -> None:
    for name in names:
        if not name:
            continue
        in_use = Image.objects.filter(
            models.Q(file=name) | models.Q(thumbnail=name) | models.Q(preview=name)
        ).exists()
        if not in_use:
            try:
                default_storage.delete(name)
            except OSError:
                logger.warning("could not delete %s", name, exc_info=True)


def image_ingest(
    *,
    owner,
    data: bytes,
    filename: str = "",
    source: str = ImageSource.UPLOAD,
    source_url: str = "",
    source_page_url: str = "",
    source_detail: dict[str, Any] | None = None,
    title: str = "",
    description: str = "",
    is_public: bool = False,
    is_nsfw: bool = False,
    album: Album | None = None,
    prepared: tuple[ImageInfo, Derivatives | None] | None = None,
    make_derivatives_inline: bool = False,
    provenance: dict[str, Any] | None = None,
    stack_near_duplicates: bool = False,
) -> IngestResult:
    """Validate, store, hash and record one image for `owner`.

    The same bytes again for the same owner return the existing image (restored
    from the trash if needed) and store nothing. On any failure nothing is left
    behind: no row and no file. Thumbnails are queued after commit unless they
    were made here from the same decode (`make_derivatives_inline`, used by indexing).
    `provenance`: what the source knew (keywords of `gallery.provenance.provenance_record`: fetched_at,
    optout_signals, checked, page_licence); every new image gets a provenance row with its file's metadata.
    """
    if prepared is None:
        prepared = inspect_image(
            data,
            filename=filename,
            max_bytes=settings.GALLERY_MAX_UPLOAD_BYTES,
            max_pixels=settings.GALLERY_MAX_IMAGE_PIXELS,
            max_total_pixels=settings.GALLERY_MAX_TOTAL_FRAME_PIXELS,
            derivatives=make_derivatives_inline,
            thumb_size=settings.GALLERY_THUMB_SIZE,
            preview_size=settings.GALLERY_PREVIEW_SIZE,
        )
    info, derivatives = prepared

    # Most arrivals are new: ask for the id only (the ORM builds a 35-column SELECT about twice as slowly).
    existing_pk = Image.objects.filter(owner=owner, sha256=info.sha256).values_list("pk", flat=True).first()
    existing = Image.objects.filter(pk=existing_pk).first() if existing_pk is not None else None
    if existing is not None:
        return _existing(existing, album)

    created_files: list[str] = []
    try:
        stored, created = _store(original_name(info), data)
        if created:
            created_files.append(stored)
        thumb_name = preview_name = ""
        if derivatives is not None:
            wanted_thumb, wanted_preview = derivative_names(info.sha256)
            thumb_name, created = _store(wanted_thumb, derivatives.thumbnail)
            if created:
                created_files.append(thumb_name)
            preview_name, created = _store(wanted_preview, derivatives.preview)
            if created:
                created_files.append(preview_name)
        with transaction.atomic():
            image = Image.objects.create(
                owner=owner, file=stored, sha256=info.sha256, phash=info.phash, taken_at=info.taken_at,
                width=info.width,
                height=info.height, format=info.format, mime=info.mime, bytes=info.size,
                original_filename=Path(filename).name[:255] if filename else "",
                title=title[:300], description=description, source=source,
                source_url=source_url[:2000], source_page_url=source_page_url[:2000],
                source_detail=source_detail or {}, is_public=is_public, is_nsfw=is_nsfw,
                thumbnail=thumb_name, preview=preview_name,
                derivatives=DerivativeStatus.READY if derivatives is not None else DerivativeStatus.PENDING,
            )
            neardup.record_pairs(image, max_distance=settings.GALLERY_NEAR_DUPLICATE_DISTANCE)
            if stack_near_duplicates:
                from .stacks import stack_on_import

                stack_on_import(image)
            from .provenance import provenance_record

            provenance_record(image=image, data=data, **(provenance or {}))
            if album is not None:
                album_add_images(album=album, images=[image])
            if derivatives is None:
                transaction.on_commit(lambda: queue_derivatives(image.pk))
            if settings.GALLERY_CLIP_MODEL:
                from .semantic.services import queue_embedding

                transaction.on_commit(lambda: queue_embedding(image.pk))
    except IntegrityError:
        # The same bytes arrived twice at once: the other request won; use its row.
        _delete_unreferenced(created_files)
        existing = Image.objects.filter(owner=owner, sha256=info.sha256).first()
        if existing is None:
            raise
        return _existing(existing, album)
    except BaseException:
        _delete_unreferenced(created_files)
        raise
    return IngestResult(image=image, created=True)


def _existing(image: Image, album: Album | None) -> IngestResult:
    if image.trashed_at is not None:
        image.trashed_at = None
        image.save(update_fields=["trashed_at", "updated_at"])
    if album is not None:
        album_add_images(album=album, images=[image])
    return IngestResult(image=image, created=False)


@lru_cache(maxsize=4)
def _default_queue(url: str, name: str):
    # django_rq builds a new connection pool per call; one per Redis URL and queue name is enough (~7 ms saved
    # per image).
    from imagineer.jobs import get_queue

    return get_queue("default")


def queue_derivatives(image_id: int) -> None:
    """Ask a worker for the thumbnail and preview; if the queue is down they stay pending.

    `manage.py make_thumbnails` makes any that are missing.
    """
    try:
        name = settings.REDIS_PREFIX + "default"
        queue = _default_queue(settings.RQ_QUEUES[name]["URL"], name)
        queue.enqueue("gallery.jobs.make_image_derivatives", image_id, result_ttl=600)
    except Exception:
        logger.warning("could not queue thumbnails for image %s; they stay pending", image_id, exc_info=True)


def image_make_derivatives(*, image: Image) -> None:
    from .imaging import make_derivatives

    try:
        with default_storage.open(image.file.name, "rb") as fh:
            data = fh.read()
        made = make_derivatives(
            data, thumb_size=settings.GALLERY_THUMB_SIZE, preview_size=settings.GALLERY_PREVIEW_SIZE
        )
        thumb_wanted, preview_wanted = derivative_names(image.sha256)
        thumb_name, _ = _store(thumb_wanted, made.thumbnail)
        preview_name, _ = _store(preview_wanted, made.preview)
    except Exception:
        logger.exception("thumbnails for image %s failed", image.pk)
        Image.objects.filter(pk=image.pk).update(derivatives=DerivativeStatus.FAILED)
        return
    Image.objects.filter(pk=image.pk).update(
        thumbnail=thumb_name, preview=preview_name, derivatives=DerivativeStatus.READY
    )


# Bulk edits. Each takes the acting user and only touches images that user may edit.

def editable_images(user, ids) -> models.QuerySet:
    qs = Image.objects.filter(pk__in=list(ids))
    return qs if user.is_staff else qs.filter(owner=user)


def images_set_public(*, user, ids, public: bool) -> int:
    return editable_images(user, ids).update(is_public=public, updated_at=timezone.now())


def images_set_nsfw(*, user, ids, nsfw: bool) -> int:
    return editable_images(user, ids).update(is_nsfw=nsfw, updated_at=timezone.now())


def images_trash(*, user, ids) -> int:
    return editable_images(user, ids).filter(trashed_at__isnull=True).update(trashed_at=timezone.now())


def images_restore(*, user, ids) -> int:
    return editable_images(user, ids).filter(trashed_at__isnull=False).update(trashed_at=None)


def image_update(*, image: Image, title: str, description: str, is_public: bool, is_nsfw: bool) -> Image:
    image.title, image.description, image.is_public, image.is_nsfw = title, description, is_public, is_nsfw
    image.save(update_fields=["title", "description", "is_public", "is_nsfw", "updated_at"])
    return image


def trash_purge(*, older_than_days: int | None = None, user=None) -> dict[str, int]:
    """Delete trashed images for good: rows first, then files no row uses any more."""
    days = settings.GALLERY_TRASH_DAYS if older_than_days is None else older_than_days
    cutoff = timezone.now() - timedelta(days=days)
    qs = Image.objects.filter(trashed_at__isnull=False, trashed_at__lte=cutoff)
    if user is not None:
        qs = qs.filter(owner=user)
    rows = list(qs.values_list("pk", "file", "thumbnail", "preview"))
    if not rows:
        return {"images": 0, "files": 0}
    names = [name for _, *files in rows for name in files if name]
    before = sum(1 for name in names if default_storage.exists(name))
    with transaction.atomic():
        Album.objects.filter(cover_id__in=[pk for pk, *_ in rows]).update(cover=None)
        Image.objects.filter(pk__in=[pk for pk, *_ in rows]).delete()
    _delete_unreferenced(list(dict.fromkeys(names)))
    after = sum(1 for name in dict.fromkeys(names) if default_storage.exists(name))
    return {"images": len(rows), "files": max(0, before - after)}


# Albums

def _unique_slug(owner, name: str, exclude_pk: int | None = None) -> str:
    base = slugify(name)[:200] or "album"
    slug, n = base, 2
    qs = Album.objects.filter(owner=owner)
    if exclude_pk:
        qs = qs.exclude(pk=exclude_pk)
    while qs.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


class AlbumNameTaken(ValueError):
    pass


@transaction.atomic
def album_create(*, owner, name: str, description: str = "", is_public: bool = False,
                 is_training_source: bool = False) -> Album:
    name = name.strip()
    if Album.objects.filter(owner=owner, name=name).exists():
        raise AlbumNameTaken(f"You already have an album named “{name}”.")
    return Album.objects.create(
        owner=owner, name=name, slug=_unique_slug(owner, name), description=description,
        is_public=is_public, is_training_source=is_training_source,
    )


def album_get_or_create(*, owner, name: str) -> tuple[Album, bool]:
    album = Album.objects.filter(owner=owner, name=name.strip()).first()
    if album:
        return album, False
    return album_create(owner=owner, name=name), True


@transaction.atomic
def album_update(*, album: Album, name: str, description: str, is_public: bool, is_training_source: bool) -> Album:
    name = name.strip()
    if Album.objects.filter(owner=album.owner, name=name).exclude(pk=album.pk).exists():
        raise AlbumNameTaken(f"You already have an album named “{name}”.")
    stored_name = Album.objects.filter(pk=album.pk).values_list("name", flat=True).first()
    if name != stored_name:
        album.slug = _unique_slug(album.owner, name, exclude_pk=album.pk)
    album.name, album.description = name, description
    album.is_public, album.is_training_source = is_public, is_training_source
    album.save()
    return album


def album_delete(*, album: Album) -> None:
    """Delete the album and its entries; its images stay in the gallery."""
    album.delete()


@transaction.atomic
def album_add_images(*, album: Album, images) -> int:
    ids = [img.pk if isinstance(img, Image) else int(img) for img in images]
    present = set(AlbumImage.objects.filter(album=album, image_id__in=ids).values_list("image_id", flat=True))
    start = (AlbumImage.objects.filter(album=album).aggregate(m=Max("position"))["m"] or 0) + 1
    new = [i for i in dict.fromkeys(ids) if i not in present]
    AlbumImage.objects.bulk_create(
        [AlbumImage(album=album, image_id=image_id, position=start + n) for n, image_id in enumerate(new)]
    )
    if new:
        Album.objects.filter(pk=album.pk).update(updated_at=timezone.now())
    return len(new)


@transaction.atomic
def album_remove_images(*, album: Album, ids) -> int:
    ids = [int(i) for i in ids]
    removed, _ = AlbumImage.objects.filter(album=album, image_id__in=ids).delete()
    if album.cover_id in ids:
        album.cover = None
        album.save(update_fields=["cover", "updated_at"])
    return removed


@transaction.atomic
def album_reorder(*, album: Album, ordered_ids) -> None:
    """Put the given images first, in this order; the rest keep their relative order after them."""
    ordered = [int(i) for i in ordered_ids]
    entries = {e.image_id: e for e in AlbumImage.objects.select_for_update().filter(album=album)}
    rest = [e.image_id for e in sorted(entries.values(), key=lambda e: (e.position, e.pk)) if e.image_id not in ordered]
    sequence = [i for i in ordered if i in entries] + rest
    for position, image_id in enumerate(sequence, start=1):
        entries[image_id].position = position
    AlbumImage.objects.bulk_update(entries.values(), ["position"])


def album_set_cover(*, album: Album, image: Image | None) -> None:
    if image is not None and not AlbumImage.objects.filter(album=album, image=image).exists():
        raise ValueError("The cover must be an image in the album.")
    album.cover = image
    album.save(update_fields=["cover", "updated_at"])
