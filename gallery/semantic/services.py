"""Embedding images (on the `default` queue) and the two semantic queries: text, and more like this image."""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage

from ..models import Image, ImageEmbedding
from . import store

logger = logging.getLogger(__name__)
BATCH = 16


def enabled() -> bool:
    raw = settings.GALLERY_CLIP_MODEL
    return bool(raw) and (Path(raw) / "config.json").exists()


def queue_embedding(image_id: int) -> None:
    """Ask a worker to embed the image; if the queue is down, `manage.py embed_images` catches up."""
    if not enabled():
        return
    try:
        from imagineer.jobs import get_queue

        get_queue("default").enqueue("gallery.jobs.embed_image", image_id, result_ttl=600)
    except Exception:
        logger.warning("could not queue the embedding of image %s", image_id, exc_info=True)


def _bytes_of(image: Image) -> bytes:
    name = image.preview.name or image.file.name  # the preview is enough for CLIP and far smaller
    with default_storage.open(name, "rb") as handle:
        return handle.read()


def embed(ids) -> int:
    """Embed the given images with the configured model (skipping ones already done); returns how many."""
    from .clip import embed_images, model_tag

    tag = model_tag()
    done = set(ImageEmbedding.objects.filter(image_id__in=list(ids), model=tag).values_list("image_id", flat=True))
    images = list(Image.objects.filter(pk__in=[i for i in ids if i not in done]).order_by("pk"))
    count = 0
    for start in range(0, len(images), BATCH):
        batch, datas = [], []
        for image in images[start:start + BATCH]:
            try:
                datas.append(_bytes_of(image))
                batch.append(image)
            except OSError:
                logger.warning("image %s has no readable file; not embedded", image.pk)
        if not batch:
            continue
        for image, vector in zip(batch, embed_images(datas), strict=True):
            store.save(image.pk, tag, vector)
            count += 1
    return count


def missing_ids(limit: int | None = None) -> list[int]:
    from .clip import model_tag

    qs = (Image.objects.alive().exclude(pk__in=ImageEmbedding.objects.filter(model=model_tag()).values("image_id"))
          .order_by("pk").values_list("pk", flat=True))
    return list(qs[:limit] if limit else qs)


def _ranked(pairs, user) -> list[tuple[Image, float]]:
    by_id = Image.objects.in_bulk([pk for pk, _ in pairs])
    return [(by_id[pk], score) for pk, score in pairs if pk in by_id and by_id[pk].is_visible_to(user)]


def search_text(*, user, text: str, images=None, limit: int = 60) -> list[tuple[Image, float]]:
    from .clip import embed_text, model_tag

    images = Image.objects.visible_to(user) if images is None else images
    pairs = store.nearest(embed_text(text), images=images, model=model_tag(), limit=limit)
    return _ranked(pairs, user)


def more_like(*, user, image: Image, images=None, limit: int = 60) -> list[tuple[Image, float]] | None:
    """None when the image has no embedding yet."""
    from .clip import model_tag

    tag = model_tag()
    vector = store.vector_of(image.pk, tag)
    if vector is None:
        return None
    images = Image.objects.visible_to(user) if images is None else images
    return _ranked(store.nearest(vector, images=images, model=tag, limit=limit, exclude=image.pk), user)
