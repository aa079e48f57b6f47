"""The access matrix: anonymous, owner, other user and staff over every gallery URL."""

import pytest
from django.test import Client

from gallery import services
from gallery.tests.conftest import image_bytes


@pytest.fixture
def world(user, other_user, staff_user, ingest):
    private = ingest(user, seed=1)
    public = ingest(user, seed=2, is_public=True)
    nsfw_public = ingest(user, seed=3, is_public=True, is_nsfw=True)
    for image in (private, public, nsfw_public):
        services.image_make_derivatives(image=image)
    private_album = services.album_create(owner=user, name="Private")
    public_album = services.album_create(owner=user, name="Public", is_public=True)
    services.album_add_images(album=public_album, images=[private, public])
    clients = {"anonymous": Client()}
    for name, who in (("owner", user), ("other", other_user), ("staff", staff_user)):
        clients[name] = Client()
        clients[name].force_login(who)
    return {"private": private, "public": public, "nsfw": nsfw_public, "private_album": private_album,
            "public_album": public_album, "clients": clients}


IMAGE_GET_URLS = ["/gallery/images/{pk}/", "/gallery/images/{pk}/thumbnail.webp",
                  "/gallery/images/{pk}/preview.webp", "/gallery/images/{pk}/original"]

# who -> which images they may see
EXPECTED_VISIBLE = {
    "anonymous": {"public"},
    "owner": {"private", "public", "nsfw"},
    "other": {"public", "nsfw"},
    "staff": {"private", "public", "nsfw"},
}


@pytest.mark.parametrize("who", sorted(EXPECTED_VISIBLE))
@pytest.mark.parametrize("url", IMAGE_GET_URLS)
def test_image_urls_follow_the_access_rules(world, who, url):
    client = world["clients"][who]
    for kind in ("private", "public", "nsfw"):
        response = client.get(url.format(pk=world[kind].pk))
        expected = 200 if kind in EXPECTED_VISIBLE[who] else 404
        assert response.status_code == expected, (who, kind, url)


@pytest.mark.parametrize("who, status", [("anonymous", 302), ("other", 404), ("owner", 302), ("staff", 302)])
@pytest.mark.parametrize("action", ["edit", "trash", "restore"])
def test_only_the_owner_and_staff_change_an_image(world, who, status, action):
    client = world["clients"][who]
    image = world["public"]
    data = {"title": "hacked", "is_public": "on"} if action == "edit" else {}
    response = client.post(f"/gallery/images/{image.pk}/{action}/", data)
    assert response.status_code == status
    image.refresh_from_db()
    if who in ("anonymous", "other"):
        assert image.title != "hacked" and image.trashed_at is None


@pytest.mark.parametrize("who, private_status", [("anonymous", 404), ("other", 404), ("owner", 200), ("staff", 200)])
def test_album_pages_follow_the_access_rules(world, who, private_status):
    client = world["clients"][who]
    assert client.get(f"/gallery/albums/{world['private_album'].pk}/").status_code == private_status
    assert client.get(f"/gallery/albums/{world['public_album'].pk}/").status_code == 200


def test_a_public_album_never_shows_its_private_images_to_others(world):
    page = world["clients"]["other"].get(f"/gallery/albums/{world['public_album'].pk}/")
    html = page.content.decode()
    assert f'data-id="{world["public"].pk}"' in html
    assert f'data-id="{world["private"].pk}"' not in html


@pytest.mark.parametrize("who, status", [("anonymous", 302), ("other", 404)])
@pytest.mark.parametrize("action", ["edit/", "delete/", "reorder/", "cover/"])
def test_only_the_owner_changes_an_album(world, who, status, action):
    album = world["public_album"]
    response = world["clients"][who].post(f"/gallery/albums/{album.pk}/{action}",
                                          {"name": "x", "ids": "1", "image": str(world["public"].pk)})
    assert response.status_code == status
    album.refresh_from_db()
    assert album.name == "Public" and album.cover is None


def test_the_grid_shows_each_viewer_what_they_may_see(world):
    def ids(who):
        html = world["clients"][who].get("/gallery/").content.decode()
        return {kind for kind in ("private", "public", "nsfw") if f'data-id="{world[kind].pk}"' in html}

    assert ids("anonymous") == {"public"}
    assert ids("owner") == {"private", "public", "nsfw"}
    assert ids("other") == {"public", "nsfw"}
    assert ids("staff") == {"private", "public", "nsfw"}


def test_other_users_cannot_add_their_images_to_my_album_or_mine_to_theirs(world, other_user, ingest):
    theirs = services.album_create(owner=other_user, name="Theirs")
    client = world["clients"]["other"]
    client.post("/gallery/bulk/", {"action": "add_to_album", "ids": str(world["private"].pk), "album": theirs.pk})
    assert theirs.ordered_images().count() == 0  # my private image is invisible to them
    client.post("/gallery/bulk/", {"action": "add_to_album", "ids": str(world["public"].pk),
                                   "album": world["private_album"].pk})
    assert world["private_album"].ordered_images().count() == 0


def test_media_files_are_not_served_by_url(world):
    image = world["private"]
    for client in world["clients"].values():
        assert client.get(f"/media/{image.file.name}").status_code == 404


def test_originals_download_as_attachments_and_derivatives_are_nosniff(world):
    client = world["clients"]["owner"]
    original = client.get(f"/gallery/images/{world['public'].pk}/original")
    assert original["Content-Disposition"].startswith("attachment;")
    assert original["Content-Type"] == "application/octet-stream"
    assert original["X-Content-Type-Options"] == "nosniff"
    assert b"".join(original.streaming_content) == image_bytes("JPEG", seed=2)
    thumb = client.get(f"/gallery/images/{world['public'].pk}/thumbnail.webp")
    assert thumb["Content-Type"] == "image/webp" and thumb["X-Content-Type-Options"] == "nosniff"


def test_login_is_required_for_my_pages(client, db):
    for url in ("/gallery/mine/", "/gallery/trash/", "/gallery/upload/", "/gallery/duplicates/",
                "/gallery/albums/new/"):
        assert client.get(url).status_code == 302
