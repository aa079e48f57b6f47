"""Reusable reads: the gallery grid, near duplicates."""

from __future__ import annotations

from django.conf import settings

from . import neardup
from .models import Album, AlbumMember, AlbumQuerySet, Image, ImageQuerySet, NearDuplicatePair, NsfwMode
from .stacks import unstacked_q


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
    if album is None and not trashed:
        qs = qs.filter(unstacked_q())  # one tile per stack
    return qs.only(
        "pk", "owner_id", "title", "original_filename", "is_nsfw", "is_public", "derivatives", "thumbnail",
        "width", "height", "source", "trashed_at", "shown_at", "taken_at", "created_at",
    )


def albums_for_viewer(albums: AlbumQuerySet, *, user) -> list[Album]:
    """The albums with what `user` may see of each: `image_count` and `viewer_cover` (an Image or None)."""
    rows = list(albums.with_counts(user).with_cover_ids(user))
    covers = Image.objects.in_bulk([a.visible_cover_id for a in rows if a.visible_cover_id])
    for album in rows:
        album.viewer_cover = covers.get(album.visible_cover_id)
    # Albums shared with the user show what members see (private images of contributors included): the query
    # above knows only the general rule, so these few are counted one by one.
    if user is not None and user.is_authenticated:
        shared = set(AlbumMember.objects.filter(user=user, album__in=[a.pk for a in rows])
                     .values_list("album_id", flat=True))
        for album in rows:
            if album.pk in shared:
                visible = album.images_visible_to(user)
                album.image_count = visible.count()
                chosen = visible.filter(pk=album.cover_id).first() if album.cover_id else None
                album.viewer_cover = chosen or visible.first()
    return rows


def similar_images(image: Image, *, user, limit: int = 12, max_distance: int | None = None) -> list[tuple[Image, int]]:
    """The owner's other images whose perceptual hash is within `max_distance` bits, closest first.

    Candidates come from the band indexes (gallery/neardup.py, the owner in each band's condition so the
    planner uses them); only they are compared, and only the closest are checked for visibility."""
    max_distance = settings.GALLERY_NEAR_DUPLICATE_DISTANCE if max_distance is None else max_distance
    rows = neardup.candidate_rows(image, image_model=Image, max_distance=max_distance)
    found = neardup.near(image.phash, rows, max_distance)[:limit * 5]
    by_id = Image.objects.visible_to(user).in_bulk([pk for pk, _ in found])
    return [(by_id[pk], distance) for pk, distance in found if pk in by_id][:limit]


def duplicate_groups(*, owner, max_distance: int | None = None, limit_groups: int = 50) -> list[list[Image]]:
    """Groups of the owner's live images that are near duplicates of each other (single-link clusters over
    the stored pairs), in the order of each group's first image."""
    max_distance = settings.GALLERY_NEAR_DUPLICATE_DISTANCE if max_distance is None else max_distance
    pairs = (NearDuplicatePair.objects.filter(owner=owner, distance__lte=max_distance,
                                              image__trashed_at__isnull=True, other__trashed_at__isnull=True)
             .values_list("image_id", "other_id", "image__stack_top_id", "other__stack_top_id"))
    parent: dict[int, int] = {}

    def find(i: int) -> int:
        parent.setdefault(i, i)
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b, a_top, b_top in pairs.iterator(chunk_size=5000):
        if (a_top or a) == (b_top or b):
            continue  # already stacked together: resolved
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for pk in sorted(parent):
        groups.setdefault(find(pk), []).append(pk)
    clusters = list(groups.values())[:limit_groups]
    by_id = Image.objects.in_bulk([pk for members in clusters for pk in members])
    return [[by_id[pk] for pk in members if pk in by_id] for members in clusters]
