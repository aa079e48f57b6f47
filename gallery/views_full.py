"""The image at its own pixel size for the viewer's 100% zoom: a re-encode of the original, never the file."""

from __future__ import annotations

from django.conf import settings
from django.core.files.storage import default_storage
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from .imaging import ImageRejected, full_size_display
from .views import _get_image_for_user


@require_GET
def image_full(request: HttpRequest, pk: int) -> HttpResponse:
    image = _get_image_for_user(request, pk)
    etag = f'"full-{image.sha256}"'
    if request.headers.get("If-None-Match") == etag:
        response = HttpResponse(status=304)
    else:
        try:
            with default_storage.open(image.file.name, "rb") as handle:
                data = handle.read()
        except (FileNotFoundError, OSError):
            raise Http404("The original file is missing.") from None
        try:
            body, content_type = full_size_display(data, max_pixels=settings.GALLERY_MAX_IMAGE_PIXELS)
        except ImageRejected as exc:  # accepted once, unreadable now (a changed limit, a damaged store)
            return HttpResponse(str(exc), status=422, content_type="text/plain; charset=utf-8")
        response = HttpResponse(body, content_type=content_type)
    response["ETag"] = etag
    response["Cache-Control"] = "private, max-age=86400"
    response["X-Content-Type-Options"] = "nosniff"
    return response
