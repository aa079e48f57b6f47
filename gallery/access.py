"""Fetching an image or album by id for a request, with the access rule for what is asked of it.

The pages (views.py, views_sharing.py, views_search.py) and the JSON API (api.py) both go through these, so
an album member gets the same answer from either; the rules themselves live on the models and in sharing.py.
Anything the user may not do reads as missing (404), never as forbidden.
"""

from __future__ import annotations

from typing import Literal

from django.http import Http404
from django.shortcuts import get_object_or_404

from .models import Album, Image

AlbumRight = Literal["view", "add", "remove", "manage"]


def image_or_404(user, pk: int, *, edit: bool = False) -> Image:
    """The image if `user` may open it (their own, public, or shared with them through an album they are a
    member of), or with `edit` change it (owner and staff)."""
    image = get_object_or_404(Image.objects.select_related("owner"), pk=pk)
    allowed = image.can_edit(user) if edit else image.is_accessible_to(user)
    if not allowed:
        raise Http404("No such image.")
    return image


def album_allows(album: Album, user, right: AlbumRight) -> bool:
    """view: see it; add: add images (contributors, editors); remove: remove images and edit captions
    (editors); manage: the album itself, its members and links (owner and staff)."""
    if right == "view":
        return album.is_visible_to(user)
    if right == "add":
        return album.can_add_images(user)
    if right == "remove":
        return album.can_remove_images(user)
    return album.can_edit(user)


def album_or_404(user, pk: int, *, right: AlbumRight = "view") -> Album:
    album = get_object_or_404(Album.objects.select_related("owner"), pk=pk)
    if not album_allows(album, user, right):
        raise Http404("No such album.")
    return album
