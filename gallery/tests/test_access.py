"""The access matrix: anonymous, owner, other user and staff over every gallery URL."""

import pytest
from django.test import Client

from gallery import services
from gallery.models import Album, AlbumImage, Image
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
    assert not AlbumImage.objects.filter(album=theirs).exists()  # my private image is invisible to them
    client.post("/gallery/bulk/", {"action": "add_to_album", "ids": str(world["public"].pk),
                                   "album": world["private_album"].pk})
    assert not AlbumImage.objects.filter(album=world["private_album"]).exists()


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


# One visibility rule for an album's contents, its count and its cover (Album.images_visible_to).

def test_an_image_made_private_leaves_other_peoples_albums(world, user, other_user):
    public = world["public"]
    bobs = services.album_create(owner=other_user, name="Found", is_public=True)
    services.album_add_images(album=bobs, images=[public])
    assert list(bobs.images_visible_to(other_user)) == [public]
    services.images_set_public(user=user, ids=[public.pk], public=False)
    assert list(bobs.images_visible_to(other_user)) == [] and list(bobs.ordered_images()) == []
    assert list(bobs.images_visible_to(None)) == []
    assert list(bobs.images_visible_to(user)) == [public]  # still hers to see
    assert Album.objects.with_counts(other_user).get(pk=bobs.pk).image_count == 0
    html = world["clients"]["other"].get(f"/gallery/albums/{bobs.pk}/").content.decode()
    assert f'data-id="{public.pk}"' not in html


@pytest.mark.parametrize("who, count, cover", [
    ("anonymous", 1, "public"), ("other", 2, "public"), ("owner", 3, "private"), ("staff", 3, "private"),
])
def test_an_albums_cover_and_count_show_each_viewer_only_what_they_may_see(world, who, count, cover):
    album = world["public_album"]  # private, public, then an NSFW public image
    services.album_add_images(album=album, images=[world["nsfw"]])
    for kind in ("private", "public", "nsfw"):
        Image.objects.filter(pk=world[kind].pk).update(title=f"{kind} title")
    services.album_set_cover(album=album, image=world["private"])
    client = world["clients"][who]

    detail = client.get(f"/gallery/albums/{album.pk}/").content.decode()
    assert f"cover: <a href=\"/gallery/images/{world[cover].pk}/\">{cover} title</a>" in detail
    assert ("private title" in detail) == (who in ("owner", "staff"))

    listing = client.get("/gallery/albums/").content.decode()
    card = listing[listing.index(f'href="/gallery/albums/{album.pk}/"'):]
    card = card[:card.index("</a>")]
    assert f"{count} image{'s' if count != 1 else ''} · public" in card
    assert f"/gallery/images/{world[cover].pk}/thumbnail.webp" in card
    if cover != "private":
        assert f"/gallery/images/{world['private'].pk}/" not in listing


def test_a_cover_that_turned_private_falls_back_for_others(world, user, other_user):
    album = world["public_album"]
    services.album_set_cover(album=album, image=world["public"])
    services.images_set_public(user=user, ids=[world["public"].pk], public=False)
    assert album.cover_image(user) == world["public"]
    assert album.cover_image(other_user) is None and album.cover_image(None) is None
