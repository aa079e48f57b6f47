"""The viewer's 100% zoom: /gallery/images/<pk>/full re-encodes the original at its own size for showing inline."""

from __future__ import annotations

import io

from django.core.files.storage import default_storage
from django.test import Client
from PIL import Image as PILImage

from gallery import services
from gallery.tests.conftest import image_bytes


def _decoded(response) -> PILImage.Image:
    return PILImage.open(io.BytesIO(b"".join(response.streaming_content) if response.streaming else response.content))


def test_full_shows_the_originals_own_pixels_where_the_preview_is_smaller(user, user_client):
    picture = PILImage.new("RGB", (2000, 900), (10, 200, 30))
    picture.putpixel((1999, 899), (255, 0, 0))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    image = services.image_ingest(owner=user, data=buffer.getvalue(), filename="wide.png",
                                  make_derivatives_inline=True).image

    preview = _decoded(user_client.get(f"/gallery/images/{image.pk}/preview.webp"))
    response = user_client.get(f"/gallery/images/{image.pk}/full")

    assert preview.size == (1280, 576)
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff" and "Content-Disposition" not in response
    full = _decoded(response)
    assert full.size == (2000, 900) and full.convert("RGB").getpixel((1999, 899)) == (255, 0, 0)  # lossless
    # Unchanged content answers 304 to a browser that has it.
    again = user_client.get(f"/gallery/images/{image.pk}/full", HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304 and again.content == b""


def test_a_jpeg_is_shown_as_a_jpeg_turned_as_its_exif_says(user, user_client):
    picture = PILImage.new("RGB", (300, 100), (200, 20, 20))
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", exif=exif.tobytes())
    image = services.image_ingest(owner=user, data=buffer.getvalue(), filename="turned.jpg").image

    response = user_client.get(f"/gallery/images/{image.pk}/full")

    assert response["Content-Type"] == "image/jpeg"
    shown = _decoded(response)
    assert shown.size == (100, 300) and not shown.getexif()  # no metadata carried over


def test_only_those_who_may_see_the_image_get_it(user, other_user):
    private = services.image_ingest(owner=user, data=image_bytes("PNG", seed=1), filename="p.png").image
    public = services.image_ingest(owner=user, data=image_bytes("PNG", seed=2), filename="q.png").image
    public.is_public = True
    public.save()
    stranger, anonymous = Client(), Client()
    stranger.force_login(other_user)

    assert stranger.get(f"/gallery/images/{private.pk}/full").status_code == 404
    assert anonymous.get(f"/gallery/images/{private.pk}/full").status_code == 404
    assert anonymous.get(f"/gallery/images/{public.pk}/full").status_code == 200


def test_a_damaged_or_missing_original_is_a_clear_answer_not_a_500(user, user_client):
    image = services.image_ingest(owner=user, data=image_bytes("PNG", seed=3), filename="d.png").image
    with default_storage.open(image.file.name, "wb") as handle:  # the stored file went bad after the upload
        handle.write(image_bytes("PNG", seed=3)[:60])

    damaged = user_client.get(f"/gallery/images/{image.pk}/full")
    default_storage.delete(image.file.name)
    missing = user_client.get(f"/gallery/images/{image.pk}/full")

    assert damaged.status_code == 422 and b"damaged" in damaged.content
    assert missing.status_code == 404
