"""Search by meaning (CLIP): a text query, and more like this image. The vectors: gallery/semantic/."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from .forms import GridFilterForm, NsfwPreferenceForm
from .models import GalleryPreference, Image, ImageSource
from .semantic import services as semantic
from .views import _get_image_for_user


def _ranked_page(request: HttpRequest, *, title: str, ranked, extra_images=(), note: str = "") -> HttpResponse:
    nsfw_mode = GalleryPreference.nsfw_mode_for(request.user)
    images = [image for image, _ in ranked] + list(extra_images)
    return render(request, "gallery/image_grid.html", {
        "title": title, "images": images, "groups": [(None, images)], "next_cursor": None,
        "filter_form": GridFilterForm(request.GET), "nsfw_mode": nsfw_mode, "selectable": False,
        "sources": ImageSource.choices, "nsfw_form": NsfwPreferenceForm(initial={"nsfw_mode": nsfw_mode}),
        "semantic_enabled": True, "search_summary": note, "ranked": True,
    })


def _semantic_scope(request: HttpRequest):
    scope = Image.objects.visible_to(request.user)
    if GalleryPreference.nsfw_mode_for(request.user) == "hide":
        scope = scope.filter(is_nsfw=False)
    return scope


@require_GET
def semantic_search(request: HttpRequest) -> HttpResponse:
    """Nearest images to a text by CLIP; images without a vector yet follow as plain-search matches."""
    text = (request.GET.get("q") or "").strip()[:200]
    if not semantic.enabled():
        messages.info(request, "Search by meaning is off: no CLIP model is configured.")
        return redirect(reverse("gallery:index") + (f"?q={text}" if text else ""))
    if not text:
        return redirect("gallery:index")
    scope = _semantic_scope(request)
    ranked = semantic.search_text(user=request.user, text=text, images=scope)
    seen = {image.pk for image, _ in ranked}
    unembedded = (scope.search(text).filter(embedding__isnull=True).exclude(pk__in=seen).order_by("-pk")[:30])
    return _ranked_page(request, title=f"Images like “{text}”", ranked=ranked, extra_images=unembedded,
                        note=f"“{text}” (by meaning)")


@require_GET
def image_more_like(request: HttpRequest, pk: int) -> HttpResponse:
    image = _get_image_for_user(request, pk)
    if not semantic.enabled():
        raise Http404("Search by meaning is off.")
    ranked = semantic.more_like(user=request.user, image=image, images=_semantic_scope(request))
    if ranked is None:
        messages.info(request, "This image is not embedded yet; try again in a moment.")
        return redirect(image)
    return _ranked_page(request, title=f"More like {image.display_name}", ranked=ranked,
                        note=f"more like {image.display_name}")
