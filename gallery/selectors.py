"""Reusable reads: the gallery grid, near duplicates."""

from __future__ import annotations

import numpy as np
from django.conf import settings

from .models import Album, AlbumQuerySet, Image, ImageQuerySet, NsfwMode


def grid_images(*, user, nsfw_mode: str, album=None, source: str = "", tag: str = "", query: str = "",
                owner=None, trashed: bool = False) -> ImageQuerySet:
    if trashed:
        qs = Image.objects.trashed().filter(owner=user)
        if album is not None:
            qs = qs.in_album(album)
    else:
        qs = album.images_visible_to(user) if album is not None else Image.objects.visible_to(user)
    if owner is not None:
        qs = qs.filter(owner=owner)
    if source:
        qs = qs.filter(source=source)
    if tag:
        qs = qs.with_tag(tag)
    if query:
        qs = qs.search(query)
    if nsfw_mode == NsfwMode.HIDE or not (user and user.is_authenticated):
        qs = qs.filter(is_nsfw=False)
    return qs.only(
        "pk", "owner_id", "title", "original_filename", "is_nsfw", "is_public", "derivatives", "thumbnail",
        "width", "height", "source", "trashed_at",
    )


def albums_for_viewer(albums: AlbumQuerySet, *, user) -> list[Album]:
    """The albums with what `user` may see of each: `image_count` and `viewer_cover` (an Image or None)."""
    rows = list(albums.with_counts(user).with_cover_ids(user))
    covers = Image.objects.in_bulk([a.visible_cover_id for a in rows if a.visible_cover_id])
    for album in rows:
        album.viewer_cover = covers.get(album.visible_cover_id)
    return rows


def _phash_array(values) -> np.ndarray:
    return np.array(values, dtype=np.int64).view(np.uint64)


def _popcount64(x: np.ndarray) -> np.ndarray:
    # Byte-wise popcount through a lookup table: fast and exact for uint64 arrays.
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[x.view(np.uint8).reshape(-1, 8)].sum(axis=1)


def similar_images(image: Image, *, user, limit: int = 12, max_distance: int | None = None) -> list[tuple[Image, int]]:
    """The owner's other images whose perceptual hash is within `max_distance` bits, closest first."""
    max_distance = settings.GALLERY_NEAR_DUPLICATE_DISTANCE if max_distance is None else max_distance
    candidates = Image.objects.visible_to(user).filter(owner=image.owner_id).exclude(pk=image.pk)
    rows = list(candidates.values_list("pk", "phash"))
    if not rows:
        return []
    ids = np.array([r[0] for r in rows])
    distances = _popcount64(_phash_array([r[1] for r in rows]) ^ np.uint64(image.phash & ((1 << 64) - 1)))
    keep = np.where(distances <= max_distance)[0]
    keep = keep[np.argsort(distances[keep], kind="stable")][:limit]
    by_id = Image.objects.in_bulk([int(ids[i]) for i in keep])
    return [(by_id[int(ids[i])], int(distances[i])) for i in keep if int(ids[i]) in by_id]


def duplicate_groups(*, owner, max_distance: int | None = None, limit_groups: int = 50) -> list[list[Image]]:
    """Groups of the owner's live images that are near duplicates of each other (single-link clusters)."""
    max_distance = settings.GALLERY_NEAR_DUPLICATE_DISTANCE if max_distance is None else max_distance
    rows = list(Image.objects.alive().filter(owner=owner).order_by("pk").values_list("pk", "phash"))
    if len(rows) < 2:
        return []
    ids = [r[0] for r in rows]
    hashes = _phash_array([r[1] for r in rows])
    parent = list(range(len(ids)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(ids) - 1):
        distances = _popcount64(hashes[i + 1:] ^ hashes[i])
        for offset in np.where(distances <= max_distance)[0]:
            a, b = find(i), find(i + 1 + int(offset))
            if a != b:
                parent[b] = a
    groups: dict[int, list[int]] = {}
    for index, pk in enumerate(ids):
        groups.setdefault(find(index), []).append(pk)
    clusters = [members for members in groups.values() if len(members) > 1][:limit_groups]
    by_id = Image.objects.in_bulk([pk for members in clusters for pk in members])
    return [[by_id[pk] for pk in members] for members in clusters]
