"""Albums together: members with roles, and read-only share links.

Roles (set by the album's owner): a viewer sees the album, a contributor also adds images, an editor also
removes images and edits captions of the album's images. Members see every live image the owner and the
contributing members put in the album, private ones included (Album.images_visible_to), and those images'
pages, but nothing else of theirs. A share link shows the same minus NSFW images to anyone holding it, until it
expires or is revoked; it reaches nothing outside its album.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from .models import Album, AlbumMember, AlbumRole, AlbumShareLink, Image, shared_image_q

MAX_LINK_DAYS = 365


class SharingError(ValueError):
    """The request cannot be done; the message says why, for the person who asked."""


def image_shared_with(user, image: Image) -> bool:
    """Whether `user` sees `image` as a member of an album holding it (see the module docstring)."""
    if user is None or not user.is_authenticated or image.trashed_at is not None:
        return False
    return Image.objects.filter(pk=image.pk).filter(shared_image_q(user)).exists()


def can_edit_captions(user, image: Image) -> bool:
    """The image's owner and staff, and editors of an album the image's owner contributes to."""
    if image.can_edit(user):
        return True
    if user is None or not user.is_authenticated or image.trashed_at is not None:
        return False
    return Image.objects.filter(pk=image.pk).filter(shared_image_q(user, editor=True)).exists()


@transaction.atomic
def member_set(*, album: Album, username: str, role: str) -> AlbumMember:
    if role not in AlbumRole.values:
        raise SharingError("Choose viewer, contributor or editor.")
    user = get_user_model().objects.filter(username__iexact=(username or "").strip(), is_active=True).first()
    if user is None:
        raise SharingError(f"There is no user called “{username}”.")
    if user.pk == album.owner_id:
        raise SharingError("The owner already has every right over the album.")
    member, _ = AlbumMember.objects.update_or_create(album=album, user=user, defaults={"role": role})
    return member


def member_remove(*, album: Album, member_id: int) -> int:
    return AlbumMember.objects.filter(album=album, pk=member_id).delete()[0]


def link_create(*, album: Album, days: int) -> AlbumShareLink:
    if not 1 <= days <= MAX_LINK_DAYS:
        raise SharingError(f"A link lasts between 1 and {MAX_LINK_DAYS} days.")
    return AlbumShareLink.objects.create(album=album, token=secrets.token_urlsafe(32),
                                         expires_at=timezone.now() + timedelta(days=days))


def link_revoke(*, album: Album, link_id: int) -> int:
    return AlbumShareLink.objects.filter(album=album, pk=link_id, revoked_at__isnull=True).update(
        revoked_at=timezone.now())


def active_link(token: str) -> AlbumShareLink | None:
    """The link for `token` if it still works; None for unknown, expired and revoked links alike."""
    if not token or len(token) > 64:
        return None
    link = AlbumShareLink.objects.select_related("album", "album__owner").filter(token=token).first()
    return link if link is not None and link.is_active else None
