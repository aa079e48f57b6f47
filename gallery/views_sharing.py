"""Album sharing pages: members and share links (owner only), and what a share link shows (anyone holding it).
The rules live in gallery/sharing.py."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from . import sharing
from .views import _get_album_for_user, _serve_file, decode_offset_cursor


@login_required
@require_POST
def album_member_set(request: HttpRequest, pk: int) -> HttpResponse:
    album = _get_album_for_user(request, pk, edit=True)
    try:
        member = sharing.member_set(album=album, username=request.POST.get("username", ""),
                                    role=request.POST.get("role", ""))
    except sharing.SharingError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{member.user.get_username()} is now {member.get_role_display().lower()}.")
    return redirect(album)


@login_required
@require_POST
def album_member_remove(request: HttpRequest, pk: int, member_pk: int) -> HttpResponse:
    album = _get_album_for_user(request, pk, edit=True)
    if sharing.member_remove(album=album, member_id=member_pk):
        messages.success(request, "Member removed.")
    return redirect(album)


@login_required
@require_POST
def album_link_create(request: HttpRequest, pk: int) -> HttpResponse:
    album = _get_album_for_user(request, pk, edit=True)
    days = request.POST.get("days", "")
    try:
        link = sharing.link_create(album=album, days=int(days) if days.isdigit() else 0)
    except sharing.SharingError as exc:
        messages.error(request, str(exc))
    else:
        until = timezone.localtime(link.expires_at)
        messages.success(request, f"Share link made; it works until {until:%Y-%m-%d %H:%M}.")
    return redirect(album)


@login_required
@require_POST
def album_link_revoke(request: HttpRequest, pk: int, link_pk: int) -> HttpResponse:
    album = _get_album_for_user(request, pk, edit=True)
    if sharing.link_revoke(album=album, link_id=link_pk):
        messages.success(request, "Share link revoked; it no longer works.")
    return redirect(album)


def _link_or_404(token: str):
    link = sharing.active_link(token)
    if link is None:
        raise Http404("This link does not exist, has expired or was revoked.")
    return link


@require_GET
def shared_album(request: HttpRequest, token: str) -> HttpResponse:
    """What a share link shows, to anyone holding it: read-only, no NSFW, nothing outside the album."""
    link = _link_or_404(token)
    album = link.album
    page_size = settings.GALLERY_PAGE_SIZE
    cursor = request.GET.get("cursor", "")
    offset = decode_offset_cursor(cursor) if "_" not in cursor else 0
    images = list(album.images_for_link().only("pk", "title", "original_filename", "width", "height",
                                                "derivatives")[offset:offset + page_size + 1])
    next_cursor = offset + page_size if len(images) > page_size else None
    response = render(request, "gallery/shared_album.html", {
        "album": album, "link": link, "images": images[:page_size], "next_cursor": next_cursor,
    })
    response["Referrer-Policy"] = "no-referrer"  # the token is in the address
    response["Cache-Control"] = "private, no-store"
    return response


@require_GET
def shared_image(request: HttpRequest, token: str, pk: int, kind: str) -> HttpResponse:
    link = _link_or_404(token)
    image = link.album.images_for_link().filter(pk=pk).first()
    if image is None or kind not in ("thumbnail", "preview"):
        raise Http404("No such image.")
    return _serve_file(image, kind)
