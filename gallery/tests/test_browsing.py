"""The grid: date order and day sections (EXIF taken date, else added date), keyset pages, natural sizes."""

import io
import re
from datetime import UTC, datetime

from PIL import Image as PILImage

from gallery.imaging import taken_date
from gallery.models import Image
from imagineer.testing import image_bytes


def _jpeg_taken(when: str | None, *, seed: int, size=(96, 64), file_date: str | None = None) -> bytes:
    base = PILImage.open(io.BytesIO(image_bytes("PNG", size=size, seed=seed))).convert("RGB")
    exif = PILImage.Exif()
    if file_date:
        exif[0x0132] = file_date
    if when:
        exif.get_ifd(0x8769)[0x9003] = when
    out = io.BytesIO()
    base.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def _ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'data-id="(\d+)"', html)]


def test_taken_date_comes_from_exif_original_then_file_date_and_ignores_nonsense():
    def read(data):
        return taken_date(PILImage.open(io.BytesIO(data)))

    assert read(_jpeg_taken("2020:05:01 10:11:12", seed=1)) == datetime(2020, 5, 1, 10, 11, 12, tzinfo=UTC)
    assert read(_jpeg_taken(None, seed=1, file_date="2018:02:03 04:05:06")) == datetime(2018, 2, 3, 4, 5, 6,
                                                                                          tzinfo=UTC)
    assert read(_jpeg_taken("0000:00:00 00:00:00", seed=1)) is None
    assert read(image_bytes("PNG", seed=1)) is None


def test_the_grid_is_in_picture_date_order_in_day_sections(user_client, user, ingest):
    old = ingest(user, _jpeg_taken("2019:07:04 12:00:00", seed=1), filename="old.jpg")
    undated = ingest(user, image_bytes("PNG", seed=2), filename="new.png")
    older_same_day = ingest(user, _jpeg_taken("2019:07:04 08:00:00", seed=3), filename="morning.jpg")
    assert old.taken_at == datetime(2019, 7, 4, 12, tzinfo=UTC) and undated.taken_at is None
    assert undated.shown_at == undated.created_at
    html = user_client.get("/gallery/mine/").content.decode()
    # Newest picture date first, whatever order they were added in.
    assert _ids(html) == [undated.pk, old.pk, older_same_day.pk]
    days = re.findall(r'data-day="([\d-]+)"', html)
    assert days == [undated.created_at.date().isoformat(), "2019-07-04"]
    assert "Thursday, 4 July 2019" in html


def test_pages_follow_the_date_order_without_gaps_or_repeats(user_client, user, ingest, settings):
    settings.GALLERY_PAGE_SIZE = 2
    images = [ingest(user, _jpeg_taken(f"2021:0{1 + n % 3}:0{1 + n % 2} 10:00:00", seed=10 + n),
                     filename=f"{n}.jpg") for n in range(7)]
    expected = [i.pk for i in sorted(Image.objects.filter(pk__in=[i.pk for i in images]),
                                     key=lambda i: (i.shown_at, i.pk), reverse=True)]
    seen, url = [], "/gallery/mine/"
    for _ in range(10):
        html = user_client.get(url, HTTP_HX_REQUEST="true" if seen else None).content.decode()
        seen.extend(_ids(html))
        found = re.search(r'hx-get="/gallery/mine/\?(cursor=[\d_]+)"', html)
        if not found:
            break
        url = "/gallery/mine/?" + found.group(1)
    assert seen == expected


def test_a_broken_cursor_is_the_first_page_not_an_error(user_client, user, ingest):
    image = ingest(user)
    for cursor in ("99999999999999999999_1", "abc", "12"):
        response = user_client.get(f"/gallery/mine/?cursor={cursor}")
        assert response.status_code == 200
    assert image.pk in _ids(user_client.get("/gallery/mine/?cursor=99999999999999999999_1").content.decode())


BROKEN_CURSORS = ("99999999999999999999", "99999999999999999999_1", "9223372036854775808", "123456789",
                  "abc", "-1", "12_")


def test_a_broken_cursor_on_any_grid_is_the_first_page_not_an_error(user_client, user, ingest):
    """Album pages page by offset: a huge one once reached the database (SQLite "datatype mismatch",
    PostgreSQL "bigint out of range") as a 500."""
    from gallery import services

    image = ingest(user, is_public=True)
    album = services.album_create(owner=user, name="Paged", is_public=True)
    services.album_add_images(album=album, images=[image])
    user_client.post(f"/gallery/albums/{album.pk}/links/", {"days": "7"})
    token = album.share_links.get().token
    grids = (f"/gallery/albums/{album.pk}/", "/gallery/", "/gallery/mine/", "/gallery/?q=image",
             f"/gallery/?album={album.pk}", "/gallery/trash/", f"/gallery/shared/{token}/")
    for url in grids:
        joiner = "&" if "?" in url else "?"
        for cursor in BROKEN_CURSORS:
            for htmx in ({}, {"HTTP_HX_REQUEST": "true"}):
                response = user_client.get(f"{url}{joiner}cursor={cursor}", **htmx)
                assert response.status_code == 200, (url, cursor, response.status_code)
    for url in (f"/gallery/albums/{album.pk}/", f"/gallery/shared/{token}/"):
        for cursor in ("99999999999999999999", "99999999999999999999_1", "123456789"):
            assert image.pk in _ids(user_client.get(f"{url}?cursor={cursor}").content.decode()), (url, cursor)
    # A cursor a page really handed out still pages.
    assert _ids(user_client.get(f"/gallery/albums/{album.pk}/?cursor=1").content.decode()) == []


def test_tiles_carry_the_natural_size_so_small_images_are_never_upscaled(user_client, user, ingest):
    tiny = ingest(user, image_bytes("PNG", size=(64, 40), seed=4))
    html = user_client.get("/gallery/mine/").content.decode()
    assert f'data-id="{tiny.pk}" data-w="64" data-h="40"' in html
    assert 'width="64" height="40"' in html
    # The viewer opens the tile's permanent link.
    assert "data-viewer-grid" in html and f'class="open" href="{tiny.get_absolute_url()}" data-preview=' in html
