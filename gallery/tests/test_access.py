"""The access matrix: anonymous, owner, other user and staff over every gallery URL."""

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from gallery import services
from gallery.models import Album, AlbumImage, Image
from gallery.tests.conftest import image_bytes

User = get_user_model()


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


# Album members (viewer, contributor, editor) and share links.

ROLES = ("viewer", "contributor", "editor")


@pytest.fixture
def shared(world, user, other_user, make_user, ingest):
    """A private album of the owner's holding her private and NSFW images, shared with one user per role;
    `other` stays an outsider. The owner also has a private image in no album."""
    from gallery import sharing

    album = services.album_create(owner=user, name="Shared")
    services.album_add_images(album=album, images=[world["private"], world["nsfw"]])
    members = {}
    for role in ROLES:
        member = make_user(role)
        sharing.member_set(album=album, username=role, role=role)
        members[role] = member
        world["clients"][role] = Client()
        world["clients"][role].force_login(member)
    outside = ingest(user, seed=40)
    return {"album": album, "members": members, "outside": outside, **world}


# who -> (sees the album, adds, removes and edits captions)
ROLE_RIGHTS = {
    "anonymous": (False, False, False), "other": (False, False, False), "viewer": (True, False, False),
    "contributor": (True, True, False), "editor": (True, True, True), "owner": (True, True, True),
    "staff": (True, True, True),
}


@pytest.mark.parametrize("who", sorted(ROLE_RIGHTS))
def test_each_role_sees_the_shared_album_and_its_images_and_nothing_else(shared, who):
    sees, _, _ = ROLE_RIGHTS[who]
    client, album = shared["clients"][who], shared["album"]
    page = client.get(f"/gallery/albums/{album.pk}/")
    assert page.status_code == (200 if sees else 404)
    for kind in ("private", "nsfw"):
        image = shared[kind]
        if sees:
            assert f'data-id="{image.pk}"' in page.content.decode()
        for url in IMAGE_GET_URLS:
            status = client.get(url.format(pk=image.pk)).status_code
            expected = 200 if sees or kind in EXPECTED_VISIBLE.get(who, set()) else 404
            assert status == expected, (who, kind, url)
    # The owner's private image in no shared album stays hers.
    outside = client.get(f"/gallery/images/{shared['outside'].pk}/").status_code
    assert outside == (200 if who in ("owner", "staff") else 404)
    # Members see the album in their list; the gallery grid does not gain the owner's private images.
    if who in ROLES:
        assert f'href="/gallery/albums/{album.pk}/"' in client.get("/gallery/albums/").content.decode()
        assert f'data-id="{shared["private"].pk}"' not in client.get("/gallery/").content.decode()


@pytest.mark.parametrize("who", sorted(ROLE_RIGHTS))
def test_contributors_and_editors_add_their_images(shared, who, make_user, ingest):
    _, adds, _ = ROLE_RIGHTS[who]
    album, client = shared["album"], shared["clients"][who]
    me = shared["members"].get(who) or (shared["album"].owner if who == "owner" else None)
    if who == "anonymous":
        response = client.post("/gallery/bulk/", {"action": "add_to_album", "ids": "1", "album": album.pk})
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
        return
    owner_of_new = me or make_user(f"{who}-2")
    if who in ("other", "staff"):
        owner_of_new = User.objects.get(username={"other": "bob", "staff": "staff"}[who])
    mine = ingest(owner_of_new, seed=50)
    client.post("/gallery/bulk/", {"action": "add_to_album", "ids": str(mine.pk), "album": album.pk})
    assert AlbumImage.objects.filter(album=album, image=mine).exists() == adds
    if adds and who in ROLES:
        # What a contributor adds, every member sees, private or not.
        viewer = shared["clients"]["viewer"]
        assert viewer.get(f"/gallery/images/{mine.pk}/").status_code == 200
        assert f'data-id="{mine.pk}"' in viewer.get(f"/gallery/albums/{album.pk}/").content.decode()


@pytest.mark.parametrize("who", sorted(ROLE_RIGHTS))
def test_only_editors_owner_and_staff_remove_images_and_edit_captions(shared, who):
    _, _, removes = ROLE_RIGHTS[who]
    album, client, image = shared["album"], shared["clients"][who], shared["private"]
    response = client.post(f"/labeling/images/{image.pk}/caption/", {"text": f"caption by {who}"})
    # Captions are the labeling app's rows; gallery may not import it (layers), so look the model up by name.
    from django.apps import apps

    Label = apps.get_model("labeling", "Label")  # noqa: N806
    has_caption = Label.objects.filter(image=image, value=f"caption by {who}").exists()
    assert has_caption == removes, (who, response.status_code)
    client.post("/gallery/bulk/", {"action": "remove_from_album", "ids": str(image.pk), "album": album.pk})
    assert AlbumImage.objects.filter(album=album, image=image).exists() != removes


@pytest.mark.parametrize("who", sorted(ROLE_RIGHTS))
@pytest.mark.parametrize("action", ["edit/", "delete/", "reorder/", "cover/", "members/", "links/"])
def test_only_the_owner_manages_a_shared_album(shared, who, action):
    album, client = shared["album"], shared["clients"][who]
    before = (album.members.count(), album.share_links.count())
    response = client.post(f"/gallery/albums/{album.pk}/{action}", {
        "name": "x", "ids": str(shared["nsfw"].pk), "image": str(shared["nsfw"].pk), "username": "bob",
        "role": "editor", "days": "3"})
    if who in ("owner", "staff"):
        assert response.status_code == 302
        return
    assert response.status_code == (302 if who == "anonymous" else 404)
    album.refresh_from_db()
    assert album.name == "Shared" and album.cover is None
    assert (album.members.count(), album.share_links.count()) == before


def test_a_share_link_shows_the_album_read_only_until_it_expires_or_is_revoked(shared):
    from datetime import timedelta

    from django.utils import timezone

    album, owner = shared["album"], shared["clients"]["owner"]
    owner.post(f"/gallery/albums/{album.pk}/links/", {"days": "7"})
    link = album.share_links.get()
    anonymous = Client()
    page = anonymous.get(f"/gallery/shared/{link.token}/")
    assert page.status_code == 200 and page["Referrer-Policy"] == "no-referrer"
    html = page.content.decode()
    private, nsfw = shared["private"], shared["nsfw"]
    assert f'data-id="{private.pk}"' in html and f'data-id="{nsfw.pk}"' not in html  # never NSFW by link
    assert anonymous.get(f"/gallery/shared/{link.token}/images/{private.pk}/thumbnail.webp").status_code == 200
    assert anonymous.get(f"/gallery/shared/{link.token}/images/{private.pk}/preview.webp").status_code == 200
    # The link reaches nothing outside its album, nor the regular image URLs, nor originals.
    for pk in (shared["outside"].pk, nsfw.pk):
        assert anonymous.get(f"/gallery/shared/{link.token}/images/{pk}/preview.webp").status_code == 404
    assert anonymous.get(f"/gallery/images/{private.pk}/").status_code == 404
    assert anonymous.get(f"/gallery/shared/{link.token}/images/{private.pk}/original.webp").status_code == 404
    assert anonymous.get("/gallery/shared/not-a-token/").status_code == 404
    # Another user's album id with this token: nothing.
    assert shared["clients"]["other"].post(f"/gallery/albums/{album.pk}/links/{link.pk}/revoke/").status_code == 404
    # Revoked: gone.
    owner.post(f"/gallery/albums/{album.pk}/links/{link.pk}/revoke/")
    assert anonymous.get(f"/gallery/shared/{link.token}/").status_code == 404
    assert anonymous.get(f"/gallery/shared/{link.token}/images/{private.pk}/thumbnail.webp").status_code == 404
    # Expired: gone too.
    owner.post(f"/gallery/albums/{album.pk}/links/", {"days": "1"})
    fresh = album.share_links.filter(revoked_at__isnull=True).get()
    assert anonymous.get(f"/gallery/shared/{fresh.token}/").status_code == 200
    type(fresh).objects.filter(pk=fresh.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert anonymous.get(f"/gallery/shared/{fresh.token}/").status_code == 404
    # Bad input is a message, not an error.
    response = owner.post(f"/gallery/albums/{album.pk}/links/", {"days": "9999"}, follow=True)
    assert "between 1 and 365 days" in response.content.decode()


def test_removing_a_member_ends_their_access(shared):
    album, viewer = shared["album"], shared["clients"]["viewer"]
    member = album.members.get(user__username="viewer")
    shared["clients"]["owner"].post(f"/gallery/albums/{album.pk}/members/{member.pk}/remove/")
    assert viewer.get(f"/gallery/albums/{album.pk}/").status_code == 404
    assert viewer.get(f"/gallery/images/{shared['private'].pk}/").status_code == 404


def test_member_form_errors_are_messages(shared):
    album, owner = shared["album"], shared["clients"]["owner"]
    for data, message in (({"username": "nobody", "role": "viewer"}, "There is no user"),
                          ({"username": "viewer", "role": "king"}, "Choose viewer"),
                          ({"username": "alice", "role": "editor"}, "already has every right")):
        response = owner.post(f"/gallery/albums/{album.pk}/members/", data, follow=True)
        assert response.status_code == 200 and message in response.content.decode()


def test_a_members_album_list_counts_and_covers_what_they_see_in_it(shared):
    album = shared["album"]  # the owner's private and NSFW images
    services.album_set_cover(album=album, image=shared["private"])
    listing = shared["clients"]["viewer"].get("/gallery/albums/").content.decode()
    card = listing[listing.index(f'href="/gallery/albums/{album.pk}/"'):]
    card = card[:card.index("</a>")]
    assert "2 images" in card and f"/gallery/images/{shared['private'].pk}/thumbnail.webp" in card


# The JSON API follows the same role matrix as the pages (gallery/access.py serves both).

@pytest.mark.parametrize("who", sorted(ROLE_RIGHTS))
def test_the_api_shows_each_role_the_shared_album_and_its_images_and_nothing_else(shared, who):
    sees, _, _ = ROLE_RIGHTS[who]
    client, album = shared["clients"][who], shared["album"]
    listing = client.get(f"/api/images?album={album.pk}")
    if who == "anonymous":
        assert listing.status_code == 401  # the API needs a login or a token; a share link is neither
        assert client.get(f"/api/images/{shared['private'].pk}").status_code == 401
        return
    assert listing.status_code == (200 if sees else 404)
    if sees:
        assert {item["id"] for item in listing.json()["items"]} == {shared["private"].pk, shared["nsfw"].pk}
    for kind in ("private", "nsfw"):
        page = client.get(f"/gallery/images/{shared[kind].pk}/").status_code
        api = client.get(f"/api/images/{shared[kind].pk}")
        assert api.status_code == page == (200 if sees or kind in EXPECTED_VISIBLE[who] else 404), (who, kind)
        if api.status_code == 200:
            assert api.json()["id"] == shared[kind].pk
    # The owner's private image in no shared album stays hers, in the API as on the page.
    outside = client.get(f"/api/images/{shared['outside'].pk}").status_code
    assert outside == (200 if who in ("owner", "staff") else 404)
    # Members see the album in the API's album list; the plain image list does not gain the owner's images.
    albums = {item["id"] for item in client.get("/api/albums").json()["items"]}
    assert (album.pk in albums) == sees
    if who in ROLES:
        assert shared["private"].pk not in {item["id"] for item in client.get("/api/images").json()["items"]}


def _own_image_of(shared, who, ingest, seed):
    owner = {"owner": shared["album"].owner, "other": User.objects.get(username="bob"),
             "staff": User.objects.get(username="staff")}.get(who) or shared["members"][who]
    return ingest(owner, seed=seed)


@pytest.mark.parametrize("who", sorted(set(ROLE_RIGHTS) - {"anonymous"}))
def test_the_api_lets_contributors_and_editors_add_images_to_the_shared_album(shared, who, ingest):
    _, adds, _ = ROLE_RIGHTS[who]
    album, client = shared["album"], shared["clients"][who]
    mine = _own_image_of(shared, who, ingest, seed=60)
    response = client.post(f"/api/albums/{album.pk}/images", {"image_ids": [mine.pk]},
                           content_type="application/json")
    assert response.status_code == (200 if adds else 404)
    assert AlbumImage.objects.filter(album=album, image=mine).exists() == adds
    # Uploading straight into the album follows the same rule; a refused upload stores nothing.
    before = Image.objects.count()
    upload = client.post("/api/images", {"file": SimpleUploadedFile("n.png", image_bytes("PNG", seed=61)),
                                         "album": str(album.pk)})
    assert upload.status_code == (201 if adds else 404), upload.content
    if adds:
        uploaded = Image.objects.get(pk=upload.json()["image"]["id"])
        assert AlbumImage.objects.filter(album=album, image=uploaded).exists()
        if who in ROLES:  # what a contributor adds, every member sees
            assert shared["clients"]["viewer"].get(f"/api/images/{uploaded.pk}").status_code == 200
    else:
        assert Image.objects.count() == before and album.entries.count() == 2


@pytest.mark.parametrize("who", sorted(set(ROLE_RIGHTS) - {"anonymous"}))
def test_the_api_lets_only_editors_owner_and_staff_remove_images_from_the_shared_album(shared, who):
    _, _, removes = ROLE_RIGHTS[who]
    album, client, image = shared["album"], shared["clients"][who], shared["private"]
    response = client.post(f"/api/albums/{album.pk}/images/remove", {"image_ids": [image.pk]},
                           content_type="application/json")
    assert response.status_code == (200 if removes else 404)
    assert AlbumImage.objects.filter(album=album, image=image).exists() != removes
    assert Image.objects.filter(pk=image.pk, trashed_at__isnull=True).exists()  # out of the album, not deleted
    if removes:
        assert response.json()["image_count"] == 1  # the NSFW image stays


def test_a_share_link_gives_no_api_access(shared):
    album = shared["album"]
    shared["clients"]["owner"].post(f"/gallery/albums/{album.pk}/links/", {"days": "7"})
    link = album.share_links.get()
    holder = Client()
    assert holder.get(f"/gallery/shared/{link.token}/").status_code == 200
    for url in (f"/api/images/{shared['private'].pk}", f"/api/images?album={album.pk}", "/api/albums"):
        assert holder.get(url).status_code == 401, url
        assert holder.get(url, HTTP_AUTHORIZATION=f"Bearer {link.token}").status_code == 401, url
    response = holder.post(f"/api/albums/{album.pk}/images/remove", {"image_ids": [shared["private"].pk]},
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {link.token}")
    assert response.status_code == 401 and album.entries.count() == 2


@pytest.mark.parametrize("who", sorted(set(ROLE_RIGHTS) - {"anonymous"}))
def test_the_upload_page_offers_and_fills_the_albums_one_may_add_to(shared, who):
    _, adds, _ = ROLE_RIGHTS[who]
    album, client = shared["album"], shared["clients"][who]
    page = client.get("/gallery/upload/").content.decode()
    assert (f'value="{album.pk}"' in page) == (adds and who != "staff")  # staff are not offered everyone's
    response = client.post("/gallery/upload/file/", {"file": SimpleUploadedFile("u.png", image_bytes("PNG", seed=62)),
                                                     "album": str(album.pk)})
    assert response.status_code == 200
    uploaded = Image.objects.get(pk=response.json()["id"])
    assert AlbumImage.objects.filter(album=album, image=uploaded).exists() == adds  # else only into the gallery


def test_the_album_owner_sees_what_a_contributor_added_privately_but_not_after_they_leave(user, other_user, ingest):
    from gallery.models import AlbumMember, AlbumRole

    album = services.album_create(owner=user, name="Team")
    AlbumMember.objects.create(album=album, user=other_user, role=AlbumRole.CONTRIBUTOR)
    theirs = ingest(other_user, image_bytes("PNG", seed=77), filename="c.png")  # private
    services.album_add_images(album=album, images=[theirs])
    owner = Client()
    owner.force_login(user)

    assert list(album.images_visible_to(user)) == [theirs]
    assert owner.get(f"/gallery/images/{theirs.pk}/").status_code == 200
    assert theirs.can_edit_captions(user)

    AlbumMember.objects.filter(album=album, user=other_user).delete()
    assert list(album.images_visible_to(user)) == []
    assert owner.get(f"/gallery/images/{theirs.pk}/").status_code == 404
