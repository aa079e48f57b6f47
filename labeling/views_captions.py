"""Caption tools on an album and an image's caption history."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from gallery.models import Album, Image

from . import captions, selectors
from .forms import BulkTagForm, FindReplaceForm, RenameTagsForm, TemplateForm, TriggerWordForm
from .models import CaptionTemplate
from .services import LabelInputError

PREVIEW_IMAGES = 8


def _get_album_for_editor(request: HttpRequest, pk: int) -> Album:
    album = get_object_or_404(Album, pk=pk)
    if not album.can_edit_captions(request.user):  # owner, staff and the album's editors
        raise Http404("No such album.")
    return album


def _form_errors(form) -> str:
    return "; ".join(error for errors in form.errors.values() for error in errors)


@login_required
@require_GET
def caption_tools(request: HttpRequest, pk: int) -> HttpResponse:
    album = _get_album_for_editor(request, pk)
    images = album.images_visible_to(request.user)
    preview = list(images[:PREVIEW_IMAGES])
    editable = set(album.caption_editable_images(request.user).filter(pk__in=[i.pk for i in preview])
                   .values_list("pk", flat=True))
    texts = selectors.album_training_captions(album, [i.pk for i in preview])
    template = CaptionTemplate.objects.filter(album=album).values_list("template", flat=True).first() or ""
    return render(request, "labeling/caption_tools.html", {
        "album": album,
        # An image's caption history opens only where its captions are the user's to edit.
        "preview": [(image, texts[image.pk], image.pk in editable) for image in preview],
        "can_manage": album.can_edit(request.user),  # analytics and export of the album: its owner's
        "tag_counts": selectors.tag_counts(images.order_by()),
        "trigger_form": TriggerWordForm(initial={"trigger_word": album.trigger_word}),
        "template_form": TemplateForm(initial={"template": template}),
        "replace_form": FindReplaceForm(),
        "tag_form": BulkTagForm(),
    })


def _tools_redirect(album: Album) -> HttpResponse:
    return redirect(reverse("labeling:caption_tools", args=[album.pk]))


def _run_tool(request: HttpRequest, album: Album, form, action) -> HttpResponse:
    if not form.is_valid():
        messages.error(request, _form_errors(form))
        return _tools_redirect(album)
    try:
        notice = action(form.cleaned_data)
    except LabelInputError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, notice)
    return _tools_redirect(album)


@login_required
@require_POST
def trigger_word_set(request: HttpRequest, pk: int) -> HttpResponse:
    album = _get_album_for_editor(request, pk)

    def action(data):
        captions.album_trigger_word_set(album=album, user=request.user, word=data["trigger_word"])
        return f"Trigger word set to {album.trigger_word!r}." if album.trigger_word else "Trigger word removed."

    return _run_tool(request, album, TriggerWordForm(request.POST), action)


@login_required
@require_POST
def template_set(request: HttpRequest, pk: int) -> HttpResponse:
    album = _get_album_for_editor(request, pk)

    def action(data):
        row = captions.album_template_set(album=album, user=request.user, template=data["template"])
        return f"Caption template set to {row.template!r}." if row else "Caption template removed."

    return _run_tool(request, album, TemplateForm(request.POST), action)


@login_required
@require_POST
def find_replace(request: HttpRequest, pk: int) -> HttpResponse:
    album = _get_album_for_editor(request, pk)

    def action(data):
        count = captions.captions_find_replace(album=album, user=request.user, find=data["find"],
                                               replace=data["replace"], regex=data["regex"],
                                               ignore_case=data["ignore_case"])
        return f"{count} caption{'s' if count != 1 else ''} changed."

    return _run_tool(request, album, FindReplaceForm(request.POST), action)


@login_required
@require_POST
def bulk_tag(request: HttpRequest, pk: int) -> HttpResponse:
    album = _get_album_for_editor(request, pk)

    def action(data):
        if data["action"] == "add":
            count = captions.album_tag_add(album=album, user=request.user, tag=data["tag"])
            return f"Tag added to {count} image{'s' if count != 1 else ''}."
        count = captions.album_tag_remove(album=album, user=request.user, tag=data["tag"])
        return f"{count} tag label{'s' if count != 1 else ''} removed."

    return _run_tool(request, album, BulkTagForm(request.POST), action)


@login_required
@require_POST
def rename_tags(request: HttpRequest, pk: int) -> HttpResponse:
    album = _get_album_for_editor(request, pk)
    tags = request.POST.getlist("tags")

    def action(data):
        count = captions.album_tags_rename(album=album, user=request.user, tags=tags, to=data["to"])
        return f"{count} tag label{'s' if count != 1 else ''} renamed or merged."

    return _run_tool(request, album, RenameTagsForm(request.POST), action)


@login_required
@require_GET
def caption_history(request: HttpRequest, pk: int) -> HttpResponse:
    image = get_object_or_404(Image, pk=pk)
    if not image.can_edit_captions(request.user):  # whoever may edit its captions sees how they changed
        raise Http404("No such image.")
    return render(request, "labeling/caption_history.html",
                  {"image": image, **captions.caption_history(image, request.user)})
