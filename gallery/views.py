"""Gallery pages. Every view that takes an id fetches through an access helper."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.db.models import Q
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from . import access, hooks, selectors, services, sharing, stacks
from .forms import AlbumForm, BulkActionForm, GridFilterForm, ImageEditForm, NsfwPreferenceForm, ReorderForm
from .imaging import ImageRejected, check_size
from .models import Album, AlbumRole, GalleryPreference, Image, ImageSource
from .semantic import services as semantic

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _get_image_for_user(request: HttpRequest, pk: int, *, edit: bool = False) -> Image:
    return access.image_or_404(request.user, pk, edit=edit)


def _get_album_for_user(request: HttpRequest, pk: int, *, edit: bool = False) -> Album:
    return access.album_or_404(request.user, pk, right="manage" if edit else "view")


# An offset past this is no page anyone reached by paging; a larger one overflows the database's OFFSET.
MAX_OFFSET = 10**8 - 1


def decode_offset_cursor(cursor: str) -> int:
    """The offset an offset-paged grid (album order, share links) starts at; 0 for anything unusable."""
    head = (cursor or "").split("_")[0]
    return int(head) if head.isdigit() and int(head) <= MAX_OFFSET else 0


def encode_grid_cursor(image: Image) -> str:
    delta = image.shown_at - _EPOCH
    return f"{(delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds}_{image.pk}"


def decode_grid_cursor(cursor: str) -> tuple[datetime, int] | None:
    micros, _, pk = (cursor or "").partition("_")
    if not micros or not pk:
        return None
    try:
        return _EPOCH + timedelta(microseconds=int(micros)), int(pk)
    except OverflowError:
        return None


def day_groups(images: list[Image]) -> list[tuple[date, list[Image]]]:
    """Consecutive images of one day (in the current time zone) together, for the grid's date headings."""
    groups: list[tuple[date, list[Image]]] = []
    for image in images:
        day = timezone.localtime(image.shown_at).date()
        if groups and groups[-1][0] == day:
            groups[-1][1].append(image)
        else:
            groups.append((day, [image]))
    return groups


def _safe_next(request: HttpRequest, fallback: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return fallback


def _grid(request: HttpRequest, *, title: str, owner=None, trashed: bool = False, album: Album | None = None,
          template: str = "gallery/image_grid.html", extra: dict | None = None) -> HttpResponse:
    form = GridFilterForm(request.GET)
    filters = form.cleaned_data if form.is_valid() else {}
    nsfw_mode = GalleryPreference.nsfw_mode_for(request.user)
    filter_album = album
    if album is None and filters.get("album"):
        filter_album = Album.objects.visible_to(request.user).filter(pk=filters["album"]).first()
        if filter_album is None:
            raise Http404("No such album.")
    qs = selectors.grid_images(
        user=request.user, nsfw_mode=nsfw_mode, album=filter_album, source=filters.get("source", ""),
        tag=filters.get("tag", ""), query=filters.get("q", ""), owner=owner, trashed=trashed,
    )
    page_size = settings.GALLERY_PAGE_SIZE
    cursor = filters.get("cursor") or ""
    if album is not None:
        # Albums keep their own order; offset paging is fine at album sizes.
        qs = qs.order_by("album_entries__position", "pk")
        offset = decode_offset_cursor(cursor)
        images = list(qs[offset:offset + page_size + 1])
        next_cursor = str(offset + page_size) if len(images) > page_size else None
    else:
        # Newest first by the picture's date (taken, else added), grouped by day; a keyset cursor.
        qs = qs.order_by("-shown_at", "-pk")
        after = decode_grid_cursor(cursor)
        if after is not None:
            qs = qs.filter(Q(shown_at__lt=after[0]) | Q(shown_at=after[0], pk__lt=after[1]))
        images = list(qs[:page_size + 1])
        next_cursor = encode_grid_cursor(images[page_size - 1]) if len(images) > page_size else None
    images = images[:page_size]
    if album is None and not trashed:
        sizes = stacks.stack_sizes([i.pk for i in images])
        for image in images:
            image.stack_size = sizes.get(image.pk, 0)
    groups = [(None, images)] if album is not None else day_groups(images)
    query = request.GET.copy()
    query.pop("cursor", None)
    # What the grid is narrowed to, for the empty result: "No images match “fox”, tag “red”." beats "no images".
    searched = []
    if filters.get("q"):
        searched.append(f"“{filters['q']}”")
    if filters.get("tag"):
        searched.append(f"tag “{filters['tag']}”")
    if filters.get("source"):
        searched.append(f"source “{ImageSource(filters['source']).label}”")
    if album is None and filter_album is not None:
        searched.append(f"album “{filter_album.name}”")
    context = {
        "title": title, "images": images, "groups": groups, "next_cursor": next_cursor, "filter_form": form,
        "search_summary": ", ".join(searched),
        "nsfw_mode": nsfw_mode, "base_query": query.urlencode(), "trashed": trashed, "album": album,
        "my_albums": Album.objects.addable_by(request.user).order_by("name") if request.user.is_authenticated else [],
        "bulk_actions": hooks.bulk_actions, "semantic_enabled": semantic.enabled(),
        "sources": ImageSource.choices, "nsfw_form": NsfwPreferenceForm(initial={"nsfw_mode": nsfw_mode}),
        "selectable": request.user.is_authenticated and (owner is not None or trashed or
                                                         (album is not None and album.can_remove_images(request.user))),
        **(extra or {}),
    }
    if request.htmx and cursor:
        return render(request, "gallery/_tiles.html", context)
    return render(request, template, context)


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    return _grid(request, title="Gallery")


@login_required
@require_GET
def mine(request: HttpRequest) -> HttpResponse:
    return _grid(request, title="My images", owner=request.user)


@login_required
@require_GET
def trash(request: HttpRequest) -> HttpResponse:
    return _grid(request, title="Trash", trashed=True, extra={"trash_days": settings.GALLERY_TRASH_DAYS})


@require_GET
def image_detail(request: HttpRequest, pk: int) -> HttpResponse:
    image = _get_image_for_user(request, pk)
    albums = Album.objects.visible_to(request.user).filter(entries__image=image).distinct()
    lineage: list[dict] = []
    for hook in hooks.lineage_hooks:
        lineage.extend(hook(image))
    panels = [(template, build(request, image)) for template, build in hooks.detail_panels]
    context = {
        "image": image,
        "albums": albums,
        # Where this image may become the cover: albums the viewer may edit, whose cover it is not yet.
        "cover_choices": {a.pk for a in albums if a.can_edit(request.user) and a.cover_id != image.pk},
        "similar": selectors.similar_images(image, user=request.user),
        "semantic_enabled": semantic.enabled(),
        "stack_top": image.stack_top if image.stack_top_id and image.stack_top.is_visible_to(request.user) else None,
        "stacked": list(Image.objects.visible_to(request.user).filter(stack_top=image)[:60]),
        "lineage": lineage,
        "panels": panels,
        "can_edit": image.can_edit(request.user),
        "edit_form": ImageEditForm(initial={
            "title": image.title, "description": image.description,
            "is_public": image.is_public, "is_nsfw": image.is_nsfw,
        }),
        "my_albums": Album.objects.addable_by(request.user) if request.user.is_authenticated else [],
        "nsfw_mode": GalleryPreference.nsfw_mode_for(request.user),
    }
    return render(request, "gallery/image_detail.html", context)


@login_required
@require_POST
def image_edit(request: HttpRequest, pk: int) -> HttpResponse:
    image = _get_image_for_user(request, pk, edit=True)
    form = ImageEditForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Please correct the errors: " + "; ".join(
            f"{field}: {' '.join(errors)}" for field, errors in form.errors.items()))
        return redirect(image)
    services.image_update(image=image, **form.cleaned_data)
    messages.success(request, "Saved.")
    return redirect(image)


@login_required
@require_POST
def image_trash(request: HttpRequest, pk: int) -> HttpResponse:
    image = _get_image_for_user(request, pk, edit=True)
    services.images_trash(user=request.user, ids=[image.pk])
    messages.success(request, f"Moved to the trash; it can be restored for {settings.GALLERY_TRASH_DAYS} days.")
    return redirect(_safe_next(request, reverse("gallery:mine")))


@login_required
@require_POST
def image_restore(request: HttpRequest, pk: int) -> HttpResponse:
    image = _get_image_for_user(request, pk, edit=True)
    services.images_restore(user=request.user, ids=[image.pk])
    messages.success(request, "Restored.")
    return redirect(image)


def _serve_derivative(request: HttpRequest, pk: int, field: str) -> HttpResponse:
    return _serve_file(_get_image_for_user(request, pk), field)


def _serve_file(image: Image, field: str) -> HttpResponse:
    name = getattr(image, field).name
    if not name:
        return redirect(static("img/placeholder.svg"))
    try:
        handle = default_storage.open(name, "rb")
    except (FileNotFoundError, OSError):
        return redirect(static("img/placeholder.svg"))
    response = FileResponse(handle, content_type="image/webp")
    response["Cache-Control"] = "private, max-age=86400"
    return response


@require_GET
def image_thumbnail(request: HttpRequest, pk: int) -> HttpResponse:
    return _serve_derivative(request, pk, "thumbnail")


@require_GET
def image_preview(request: HttpRequest, pk: int) -> HttpResponse:
    return _serve_derivative(request, pk, "preview")


@require_GET
def image_original(request: HttpRequest, pk: int) -> HttpResponse:
    """Originals are only ever downloads, never rendered inline."""
    image = _get_image_for_user(request, pk)
    try:
        handle = default_storage.open(image.file.name, "rb")
    except (FileNotFoundError, OSError):
        raise Http404("The original file is missing.")
    filename = image.original_filename or f"{image.sha256[:16]}.{image.format.lower()}"
    response = FileResponse(handle, as_attachment=True, filename=filename, content_type="application/octet-stream")
    response["Content-Security-Policy"] = "sandbox; default-src 'none'"
    response["Cache-Control"] = "private, no-transform"
    return response


@login_required
def upload(request: HttpRequest) -> HttpResponse:
    """The drag-and-drop page; without JavaScript its form posts all files here at once."""
    albums = Album.objects.addable_by(request.user).order_by("name")
    results = []
    if request.method == "POST":
        album = _album_from_post(request)
        for upload_file in request.FILES.getlist("files"):
            results.append(_ingest_upload(request, upload_file, album))
    return render(request, "gallery/upload.html", {
        "albums": albums, "results": results, "max_bytes": settings.GALLERY_MAX_UPLOAD_BYTES,
    })


def _album_from_post(request: HttpRequest) -> Album | None:
    album_id = request.POST.get("album") or ""
    if not album_id.isdigit():
        return None
    album = Album.objects.filter(pk=int(album_id)).first()
    # The rule the bulk action and the API use: owner, staff, contributors and editors.
    return album if album is not None and access.album_allows(album, request.user, "add") else None


def _ingest_upload(request: HttpRequest, upload_file, album: Album | None) -> dict:
    name = upload_file.name
    try:
        check_size(upload_file.size, settings.GALLERY_MAX_UPLOAD_BYTES)
    except ImageRejected as exc:
        return {"ok": False, "name": name, "status": 413, "error": str(exc)}
    try:
        data = upload_file.read()
        result = services.image_ingest(owner=request.user, data=data, filename=name, source=ImageSource.UPLOAD,
                                       album=album, stack_near_duplicates=request.POST.get("stack") == "on")
    except services.StorageFailed as exc:
        return {"ok": False, "name": name, "status": 507, "error": str(exc)}
    except ImageRejected as exc:
        return {"ok": False, "name": name, "status": 400, "error": str(exc)}
    return {"ok": True, "name": name, "status": 200, "id": result.image.pk, "duplicate": result.duplicate,
            "url": result.image.get_absolute_url(), "thumbnail": result.image.thumbnail_url()}


@login_required
@require_POST
def upload_file(request: HttpRequest) -> JsonResponse:
    """One file per request, so the page can show per-file progress and errors."""
    upload_file = request.FILES.get("file")
    if upload_file is None:
        return JsonResponse({"ok": False, "error": "No file was sent."}, status=400)
    result = _ingest_upload(request, upload_file, _album_from_post(request))
    return JsonResponse(result, status=result.pop("status"))


@login_required
@require_POST
def bulk(request: HttpRequest) -> HttpResponse:
    form = BulkActionForm(request.POST)
    fallback = reverse("gallery:mine")
    if not form.is_valid():
        messages.error(request, " ".join(e for errors in form.errors.values() for e in errors))
        return redirect(_safe_next(request, fallback))
    action, ids = form.cleaned_data["action"], form.cleaned_data["ids"]
    user = request.user
    if action in ("add_to_album", "remove_from_album"):
        album_id = form.cleaned_data.get("album")
        album = Album.objects.filter(pk=album_id).first() if album_id else None
        allowed = album is not None and (album.can_add_images(user) if action == "add_to_album"
                                         else album.can_remove_images(user))
        if not allowed:
            messages.error(request, "Choose one of your albums (or one shared with you with that right).")
            return redirect(_safe_next(request, fallback))
        if action == "add_to_album":
            # Only images the user may see can go into their album.
            visible = Image.objects.visible_to(user).filter(pk__in=ids).values_list("pk", flat=True)
            count = services.album_add_images(album=album, images=list(visible))
            messages.success(request, f"Added {count} image(s) to “{album.name}”.")
        else:
            count = services.album_remove_images(album=album, ids=ids)
            messages.success(request, f"Removed {count} image(s) from “{album.name}”.")
        return redirect(_safe_next(request, fallback))
    operations = {
        "make_public": (lambda: services.images_set_public(user=user, ids=ids, public=True), "made public"),
        "make_private": (lambda: services.images_set_public(user=user, ids=ids, public=False), "made private"),
        "mark_nsfw": (lambda: services.images_set_nsfw(user=user, ids=ids, nsfw=True), "marked NSFW"),
        "mark_sfw": (lambda: services.images_set_nsfw(user=user, ids=ids, nsfw=False), "marked not NSFW"),
        "trash": (lambda: services.images_trash(user=user, ids=ids), "moved to the trash"),
        "restore": (lambda: services.images_restore(user=user, ids=ids), "restored"),
        "unstack": (lambda: stacks.stack_remove(user=user, ids=ids), "taken out of their stacks"),
    }
    if action == "stack":
        try:
            count = stacks.stack_create(user=user, top_id=ids[0], ids=ids[1:])
        except stacks.StackError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"{count} image(s) stacked under the first selected.")
        return redirect(_safe_next(request, fallback))
    run, verb = operations[action]
    count = run()
    messages.success(request, f"{count} image(s) {verb}.")
    return redirect(_safe_next(request, fallback))


@login_required
@require_POST
def preferences(request: HttpRequest) -> HttpResponse:
    form = NsfwPreferenceForm(request.POST)
    if form.is_valid():
        GalleryPreference.objects.update_or_create(user=request.user,
                                                   defaults={"nsfw_mode": form.cleaned_data["nsfw_mode"]})
    return redirect(_safe_next(request, reverse("gallery:index")))


# Albums

@require_GET
def albums(request: HttpRequest) -> HttpResponse:
    qs = Album.objects.visible_to(request.user).select_related("owner")
    mine = qs.filter(owner=request.user) if request.user.is_authenticated else qs.none()
    others = qs.exclude(owner=request.user) if request.user.is_authenticated else qs
    return render(request, "gallery/album_list.html", {
        "mine": selectors.albums_for_viewer(mine, user=request.user),
        "others": selectors.albums_for_viewer(others[:100], user=request.user), "form": AlbumForm(),
    })


@login_required
def album_create(request: HttpRequest) -> HttpResponse:
    form = AlbumForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            album = services.album_create(owner=request.user, **form.cleaned_data)
        except services.AlbumNameTaken as exc:
            form.add_error("name", str(exc))
        else:
            messages.success(request, f"Album “{album.name}” created.")
            return redirect(album)
    return render(request, "gallery/album_form.html", {"form": form, "album": None},
                  status=400 if request.method == "POST" else 200)


@require_GET
def album_detail(request: HttpRequest, pk: int) -> HttpResponse:
    album = _get_album_for_user(request, pk)
    can_edit = album.can_edit(request.user)
    extra = {"can_edit": can_edit, "cover": album.cover_image(request.user), "role": album.role_of(request.user),
             "can_remove": album.can_remove_images(request.user)}
    if can_edit:
        extra.update(members=album.members.select_related("user").order_by("user__username"),
                     share_links=album.share_links.all()[:20], roles=AlbumRole.choices,
                     link_days=sharing.MAX_LINK_DAYS)
    return _grid(request, title=album.name, album=album, template="gallery/album_detail.html", extra=extra)


@login_required
def album_edit(request: HttpRequest, pk: int) -> HttpResponse:
    album = _get_album_for_user(request, pk, edit=True)
    form = AlbumForm(request.POST or None, instance=album)
    if request.method == "POST" and form.is_valid():
        try:
            services.album_update(album=album, **form.cleaned_data)
        except services.AlbumNameTaken as exc:
            form.add_error("name", str(exc))
        else:
            messages.success(request, "Album saved.")
            return redirect(album)
    return render(request, "gallery/album_form.html", {"form": form, "album": album},
                  status=400 if request.method == "POST" else 200)


@login_required
@require_POST
def album_delete(request: HttpRequest, pk: int) -> HttpResponse:
    album = _get_album_for_user(request, pk, edit=True)
    name = album.name
    services.album_delete(album=album)
    messages.success(request, f"Album “{name}” deleted; its images are still in your gallery.")
    return redirect("gallery:albums")


@login_required
@require_POST
def album_reorder(request: HttpRequest, pk: int) -> HttpResponse:
    album = _get_album_for_user(request, pk, edit=True)
    form = ReorderForm(request.POST)
    if not form.is_valid():
        return JsonResponse({"ok": False, "error": "Image ids must be numbers."}, status=400)
    services.album_reorder(album=album, ordered_ids=form.cleaned_data["ids"])
    if request.htmx or request.headers.get("Accept") == "application/json":
        return JsonResponse({"ok": True})
    return redirect(album)


@login_required
@require_POST
def album_move(request: HttpRequest, pk: int, image_pk: int, direction: str) -> HttpResponse:
    """Move one image a place up or down (the no-JavaScript way to reorder)."""
    album = _get_album_for_user(request, pk, edit=True)
    order = list(album.entries.order_by("position", "pk").values_list("image_id", flat=True))
    if image_pk in order:
        i = order.index(image_pk)
        j = i - 1 if direction == "up" else i + 1
        if 0 <= j < len(order):
            order[i], order[j] = order[j], order[i]
            services.album_reorder(album=album, ordered_ids=order)
    return redirect(album)


@login_required
@require_POST
def album_cover(request: HttpRequest, pk: int) -> HttpResponse:
    album = _get_album_for_user(request, pk, edit=True)
    image_id = request.POST.get("image", "")
    image = Image.objects.filter(pk=int(image_id)).first() if image_id.isdigit() else None
    try:
        services.album_set_cover(album=album, image=image)
    except ValueError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Cover chosen.")
    return redirect(_safe_next(request, album.get_absolute_url()))


# Duplicates review

@login_required
@require_GET
def duplicates(request: HttpRequest) -> HttpResponse:
    groups = selectors.duplicate_groups(owner=request.user)
    return render(request, "gallery/duplicates.html", {
        "groups": groups, "nsfw_mode": GalleryPreference.nsfw_mode_for(request.user),
        "distance": settings.GALLERY_NEAR_DUPLICATE_DISTANCE,
    })


@login_required
@require_POST
def duplicates_resolve(request: HttpRequest) -> HttpResponse:
    """Keep one image of a group and move the others to the trash."""
    try:
        keep = int(request.POST["keep"])
        group = [int(i) for i in request.POST.getlist("group")]
    except (KeyError, ValueError):
        messages.error(request, "Choose the image to keep.")
        return redirect("gallery:duplicates")
    if keep not in group:
        messages.error(request, "The image to keep must be one of the group.")
        return redirect("gallery:duplicates")
    others = [i for i in group if i != keep]
    if request.POST.get("how") == "stack":
        try:
            count = stacks.stack_create(user=request.user, top_id=keep, ids=others)
        except stacks.StackError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Stacked {count} image(s) under the chosen one.")
        return redirect("gallery:duplicates")
    count = services.images_trash(user=request.user, ids=others)
    messages.success(request, f"Kept one image and moved {count} to the trash.")
    return redirect("gallery:duplicates")


