import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from gallery import services
from gallery.models import Album, GalleryPreference, Image
from gallery.tests.conftest import image_bytes, stored_files
from gallery.views import encode_grid_cursor


def _upload(client, name, data, **extra):
    return client.post("/gallery/upload/file/", {"file": SimpleUploadedFile(name, data), **extra})


def test_uploading_one_file_returns_json_and_creates_the_image(user_client, user):
    response = _upload(user_client, "a.png", image_bytes("PNG", seed=1))
    assert response.status_code == 200
    body = response.json()
    image = Image.objects.get(pk=body["id"])
    assert body["ok"] and not body["duplicate"] and body["url"] == f"/gallery/images/{image.pk}/"
    assert image.owner == user and image.source == "upload"


def test_the_owner_comes_from_the_request_never_the_form(user_client, user, other_user):
    response = _upload(user_client, "a.png", image_bytes("PNG", seed=1), owner=other_user.pk)
    assert Image.objects.get(pk=response.json()["id"]).owner == user


def test_a_bad_upload_gets_a_per_file_error_and_nothing_is_kept(user_client, media_root):
    response = _upload(user_client, "evil.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    assert response.status_code == 400
    assert "SVG" in response.json()["error"]
    assert Image.objects.count() == 0 and stored_files(media_root) == []


def test_an_oversize_upload_is_refused_with_413(user_client, settings):
    settings.GALLERY_MAX_UPLOAD_BYTES = 1000
    response = _upload(user_client, "big.png", image_bytes("PNG", size=(400, 400)))
    assert response.status_code == 413 and "limit" in response.json()["error"]


def test_the_same_file_twice_is_reported_as_a_duplicate(user_client):
    data = image_bytes(seed=4)
    first = _upload(user_client, "a.jpg", data).json()
    second = _upload(user_client, "b.jpg", data).json()
    assert second["duplicate"] and second["id"] == first["id"]


def test_upload_into_an_album_only_of_my_own(user_client, user, other_user):
    mine = services.album_create(owner=user, name="Mine")
    theirs = services.album_create(owner=other_user, name="Theirs")
    _upload(user_client, "a.jpg", image_bytes(seed=1), album=mine.pk)
    _upload(user_client, "b.jpg", image_bytes(seed=2), album=theirs.pk)
    assert mine.ordered_images().count() == 1 and theirs.ordered_images().count() == 0


def test_the_form_upload_without_javascript_reports_each_file(user_client):
    files = [SimpleUploadedFile("ok.jpg", image_bytes(seed=1)), SimpleUploadedFile("bad.txt", b"hello")]
    response = user_client.post("/gallery/upload/", {"files": files})
    html = response.content.decode()
    assert response.status_code == 200
    assert "uploaded" in html and "not an image" in html
    assert Image.objects.count() == 1


def test_upload_page_has_a_dropzone_and_progress_script(user_client):
    html = user_client.get("/gallery/upload/").content.decode()
    assert 'id="dropzone"' in html and "js/upload.js" in html and "multiple" in html


@pytest.mark.parametrize("action, field, value", [
    ("make_public", "is_public", True), ("make_private", "is_public", False),
    ("mark_nsfw", "is_nsfw", True), ("mark_sfw", "is_nsfw", False),
])
def test_bulk_flag_actions(user_client, user, ingest, action, field, value):
    images = [ingest(user, seed=s, is_public=not value, is_nsfw=not value) for s in range(3)]
    ids = ",".join(str(i.pk) for i in images[:2])
    response = user_client.post("/gallery/bulk/", {"action": action, "ids": ids})
    assert response.status_code == 302
    flags = [getattr(Image.objects.get(pk=i.pk), field) for i in images]
    assert flags == [value, value, not value]


def test_bulk_trash_restore_and_album_actions(user_client, user, ingest):
    images = [ingest(user, seed=s) for s in range(3)]
    ids = f"{images[0].pk},{images[1].pk}"
    album = services.album_create(owner=user, name="Picks")
    user_client.post("/gallery/bulk/", {"action": "add_to_album", "ids": ids, "album": album.pk})
    assert set(album.ordered_images()) == {images[0], images[1]}
    user_client.post("/gallery/bulk/", {"action": "remove_from_album", "ids": str(images[0].pk), "album": album.pk})
    assert list(album.ordered_images()) == [images[1]]
    user_client.post("/gallery/bulk/", {"action": "trash", "ids": ids})
    assert Image.objects.trashed().count() == 2
    page = user_client.get("/gallery/trash/").content.decode()
    assert f'data-id="{images[0].pk}"' in page
    user_client.post("/gallery/bulk/", {"action": "restore", "ids": ids})
    assert Image.objects.trashed().count() == 0


def test_bulk_with_bad_input_is_a_message_not_an_error(user_client):
    response = user_client.post("/gallery/bulk/", {"action": "explode", "ids": "1,x"}, follow=True)
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode() or "numbers" in response.content.decode()


def test_nsfw_preference_blurs_hides_or_shows(user_client, user, ingest):
    nsfw = ingest(user, seed=1, is_nsfw=True)
    html = user_client.get("/gallery/mine/").content.decode()
    assert f'class="tile blur" data-id="{nsfw.pk}"' in html  # blur is the default
    user_client.post("/gallery/preferences/", {"nsfw_mode": "hide"})
    assert GalleryPreference.nsfw_mode_for(user) == "hide"
    assert f'data-id="{nsfw.pk}"' not in user_client.get("/gallery/mine/").content.decode()
    user_client.post("/gallery/preferences/", {"nsfw_mode": "show"})
    assert f'class="tile" data-id="{nsfw.pk}"' in user_client.get("/gallery/mine/").content.decode()


def test_grid_filters_by_source_album_and_search(user_client, user, ingest):
    a = ingest(user, seed=1, title="Red fox at dawn")
    b = ingest(user, seed=2, source="scrape", description="a sleepy cat")
    album = services.album_create(owner=user, name="Foxes")
    services.album_add_images(album=album, images=[a])

    def ids(query):
        html = user_client.get("/gallery/mine/?" + query).content.decode()
        return {i.pk for i in (a, b) if f'data-id="{i.pk}"' in html}

    assert ids("") == {a.pk, b.pk}
    assert ids("source=scrape") == {b.pk}
    assert ids(f"album={album.pk}") == {a.pk}
    assert ids("q=fox") == {a.pk}
    assert ids("q=sleepy+cat") == {b.pk}
    assert ids("q=nothing") == set()


def test_grid_pages_with_a_cursor_and_htmx_gets_only_tiles(user_client, user, ingest, settings):
    settings.GALLERY_PAGE_SIZE = 2
    images = [ingest(user, seed=s) for s in range(5)]
    first = user_client.get("/gallery/mine/").content.decode()
    newest = sorted(images, key=lambda i: -i.pk)
    assert f'data-id="{newest[0].pk}"' in first and f'data-id="{newest[2].pk}"' not in first
    cursor = encode_grid_cursor(Image.objects.get(pk=newest[1].pk))
    assert f"cursor={cursor}" in first
    more = user_client.get(f"/gallery/mine/?cursor={cursor}", HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in more
    assert f'data-id="{newest[2].pk}"' in more and f'data-id="{newest[3].pk}"' in more


def test_the_grid_uses_a_constant_number_of_queries(user_client, user, ingest, django_assert_max_num_queries,
                                                    settings):
    settings.GALLERY_PAGE_SIZE = 50
    for s in range(3):
        ingest(user, seed=s)
    with django_assert_max_num_queries(12) as small:
        user_client.get("/gallery/mine/")
    for s in range(3, 40):
        ingest(user, seed=s)
    with django_assert_max_num_queries(len(small.captured_queries)):
        response = user_client.get("/gallery/mine/")
    assert response.content.decode().count('class="tile') == 40


def test_album_create_edit_reorder_cover_and_delete(user_client, user, ingest):
    response = user_client.post("/gallery/albums/new/", {"name": "Best of", "description": "d"})
    album = Album.objects.get(name="Best of")
    assert response.status_code == 302 and album.owner == user
    duplicate = user_client.post("/gallery/albums/new/", {"name": "Best of"})
    assert duplicate.status_code == 400 and "already have an album" in duplicate.content.decode()
    images = [ingest(user, seed=s) for s in range(3)]
    services.album_add_images(album=album, images=images)
    ids = f"{images[2].pk},{images[0].pk},{images[1].pk}"
    assert user_client.post(f"/gallery/albums/{album.pk}/reorder/", {"ids": ids},
                            HTTP_ACCEPT="application/json").json() == {"ok": True}
    assert list(album.ordered_images()) == [images[2], images[0], images[1]]
    user_client.post(f"/gallery/albums/{album.pk}/move/{images[1].pk}/up/")
    assert list(album.ordered_images()) == [images[2], images[1], images[0]]
    user_client.post(f"/gallery/albums/{album.pk}/cover/", {"image": images[0].pk})
    album.refresh_from_db()
    assert album.cover == images[0]
    user_client.post(f"/gallery/albums/{album.pk}/edit/", {"name": "Renamed", "is_public": "on"})
    album.refresh_from_db()
    assert album.name == "Renamed" and album.is_public and album.slug == "renamed"
    listing = user_client.get("/gallery/albums/").content.decode()
    assert "Renamed" in listing and "3 images" in listing
    user_client.post(f"/gallery/albums/{album.pk}/delete/")
    assert not Album.objects.exists() and Image.objects.count() == 3


def test_image_page_shows_metadata_lineage_albums_and_similar(user_client, user, ingest):
    data = image_bytes("PNG", size=(300, 200), seed=11)
    image = ingest(user, data, filename="fox.png", source="scrape", source_url="https://example.com/fox.png",
                   source_page_url="https://example.com/foxes")
    out = io.BytesIO()
    from PIL import Image as PILImage

    PILImage.open(io.BytesIO(data)).resize((150, 100)).save(out, format="JPEG")
    near = ingest(user, out.getvalue())
    album = services.album_create(owner=user, name="Foxes")
    services.album_add_images(album=album, images=[image])
    html = user_client.get(f"/gallery/images/{image.pk}/").content.decode()
    for text in ("300×200", "PNG", "Scraped", "https://example.com/foxes", "Foxes", "Download original",
                 f"/gallery/images/{near.pk}/"):
        assert text in html, text


def test_image_edit_saves_title_and_flags(user_client, user, ingest):
    image = ingest(user)
    user_client.post(f"/gallery/images/{image.pk}/edit/", {"title": "New", "description": "D", "is_nsfw": "on"})
    image.refresh_from_db()
    assert (image.title, image.description, image.is_nsfw, image.is_public) == ("New", "D", True, False)


def test_duplicates_page_keeps_one_and_trashes_the_others(user_client, user, ingest):
    data = image_bytes("PNG", size=(300, 200), seed=11)
    a = ingest(user, data)
    out = io.BytesIO()
    from PIL import Image as PILImage

    PILImage.open(io.BytesIO(data)).save(out, format="JPEG", quality=50)
    b = ingest(user, out.getvalue())
    page = user_client.get("/gallery/duplicates/").content.decode()
    assert f'value="{a.pk}"' in page and f'value="{b.pk}"' in page
    user_client.post("/gallery/duplicates/resolve/", {"keep": b.pk, "group": [a.pk, b.pk]})
    a.refresh_from_db()
    b.refresh_from_db()
    assert a.is_trashed and not b.is_trashed
    assert "No near duplicates" in user_client.get("/gallery/duplicates/").content.decode()


def test_admin_lists_images_with_thumbnails_and_bulk_actions_use_the_services(staff_client, user, ingest):
    image = ingest(user, title="Admin view")
    services.image_make_derivatives(image=image)
    page = staff_client.get("/admin/gallery/image/")
    assert page.status_code == 200 and "Admin view" in page.content.decode()
    assert f"/gallery/images/{image.pk}/thumbnail.webp" in page.content.decode()
    staff_client.post("/admin/gallery/image/", {"action": "make_public", "_selected_action": [image.pk]})
    image.refresh_from_db()
    assert image.is_public
    staff_client.post("/admin/gallery/image/", {"action": "trash", "_selected_action": [image.pk]})
    image.refresh_from_db()
    assert image.is_trashed
    assert staff_client.get("/admin/gallery/album/").status_code == 200


def test_the_album_page_offers_each_image_as_the_cover_to_its_editor(user_client, other_client, user, ingest):
    images = [ingest(user, seed=s) for s in range(2)]
    album = services.album_create(owner=user, name="Covers", is_public=True)
    services.album_add_images(album=album, images=images)
    cover_form = f'action="/gallery/albums/{album.pk}/cover/"'
    # Until one is chosen the first image is the cover: it is marked, the others are offered.
    html = user_client.get(f"/gallery/albums/{album.pk}/").content.decode()
    assert html.count(cover_form) == 1 and "Set as cover" in html and ">cover</span>" in html
    assert f'<input type="hidden" name="image" value="{images[1].pk}">' in html
    response = user_client.post(f"/gallery/albums/{album.pk}/cover/", {"image": images[1].pk})
    album.refresh_from_db()
    assert response.status_code == 302 and album.cover == images[1]
    html = user_client.get(f"/gallery/albums/{album.pk}/").content.decode()
    assert html.count(cover_form) == 1 and f'<input type="hidden" name="image" value="{images[0].pk}">' in html
    # Someone who may only look at the album is not offered the choice.
    assert "Set as cover" not in other_client.get(f"/gallery/albums/{album.pk}/").content.decode()


def test_the_image_page_offers_it_as_the_cover_of_the_albums_you_may_edit(user_client, other_user, user, ingest):
    image = ingest(user, seed=3)
    image.is_public = True
    image.save(update_fields=["is_public"])
    mine = services.album_create(owner=user, name="Mine")
    theirs = services.album_create(owner=other_user, name="Theirs", is_public=True)
    services.album_add_images(album=mine, images=[image])
    services.album_add_images(album=theirs, images=[image])
    html = user_client.get(f"/gallery/images/{image.pk}/").content.decode()
    assert f'action="/gallery/albums/{mine.pk}/cover/"' in html
    assert f'action="/gallery/albums/{theirs.pk}/cover/"' not in html and "Theirs" in html
    response = user_client.post(f"/gallery/albums/{mine.pk}/cover/",
                                {"image": image.pk, "next": f"/gallery/images/{image.pk}/"})
    assert response.status_code == 302 and response["Location"] == f"/gallery/images/{image.pk}/"
    mine.refresh_from_db()
    assert mine.cover == image
    html = user_client.get(f"/gallery/images/{image.pk}/").content.decode()
    assert f'action="/gallery/albums/{mine.pk}/cover/"' not in html and '<span class="badge">cover</span>' in html


def test_a_search_without_hits_says_so_and_offers_to_clear_it(user_client, user, ingest):
    fox = ingest(user, seed=1, title="Red fox")
    album = services.album_create(owner=user, name="Foxes")
    services.album_add_images(album=album, images=[fox])
    html = user_client.get("/gallery/mine/?q=zebra&tag=striped").content.decode()
    assert "No images match “zebra”, tag “striped”." in html and "Upload some" not in html
    assert '<a href="/gallery/mine/">Clear the search</a>' in html
    html = user_client.get(f"/gallery/albums/{album.pk}/?q=<zebra>").content.decode()
    assert "No images of this album match “&lt;zebra&gt;”." in html and "This album is empty" not in html
    assert f'<a href="/gallery/albums/{album.pk}/">Clear the search</a>' in html
    # Without a search an empty album is just empty.
    empty = services.album_create(owner=user, name="Empty")
    assert "This album is empty" in user_client.get(f"/gallery/albums/{empty.pk}/").content.decode()
