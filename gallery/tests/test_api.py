import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from gallery import services
from gallery.models import Image
from gallery.tests.conftest import image_bytes
from imagineer.services import api_token_create


@pytest.fixture
def token(user):
    return api_token_create(user=user, name="t")[1]


def _auth(token):
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_upload_list_and_get_images_through_the_api(client, user, token):
    response = client.post("/api/images", {"file": SimpleUploadedFile("a.png", image_bytes("PNG")), "title": "A"},
                           **_auth(token))
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["duplicate"] is False and body["image"]["title"] == "A" and body["image"]["owner"] == user.username
    again = client.post("/api/images", {"file": SimpleUploadedFile("b.png", image_bytes("PNG"))}, **_auth(token))
    assert again.status_code == 200 and again.json()["duplicate"] is True
    listing = client.get("/api/images?mine=true", **_auth(token)).json()
    assert listing["count"] == 1 and listing["items"][0]["id"] == body["image"]["id"]
    assert client.get(f"/api/images/{body['image']['id']}", **_auth(token)).json()["width"] == 96


def test_a_bad_file_is_a_400_with_the_reason(client, token):
    response = client.post("/api/images", {"file": SimpleUploadedFile("a.png", b"nope")}, **_auth(token))
    assert response.status_code == 400 and "not an image" in response.json()["detail"]
    assert Image.objects.count() == 0


def test_private_images_of_others_are_404_in_the_api(client, other_user, token, ingest):
    theirs = ingest(other_user)
    assert client.get(f"/api/images/{theirs.pk}", **_auth(token)).status_code == 404
    assert client.get("/api/images", **_auth(token)).json()["count"] == 0


def test_albums_through_the_api(client, user, token, ingest):
    created = client.post("/api/albums", {"name": "Set"}, content_type="application/json", **_auth(token))
    assert created.status_code == 201
    album_id = created.json()["id"]
    image = ingest(user)
    added = client.post(f"/api/albums/{album_id}/images", {"image_ids": [image.pk]},
                        content_type="application/json", **_auth(token))
    assert added.json()["image_count"] == 1
    assert client.post("/api/albums", {"name": "Set"}, content_type="application/json",
                       **_auth(token)).status_code == 409


def test_nobody_adds_to_another_users_album(client, other_user, token):
    album = services.album_create(owner=other_user, name="Theirs")
    response = client.post(f"/api/albums/{album.pk}/images", {"image_ids": []}, content_type="application/json",
                           **_auth(token))
    assert response.status_code == 404


def test_absurd_paging_is_a_422_not_a_500(client, token):
    assert client.get("/api/images?offset=66362571004915389611114496", **_auth(token)).status_code == 422
    assert client.get("/api/images?limit=0", **_auth(token)).status_code == 422


def test_album_counts_and_contents_in_the_api_are_what_the_caller_may_see(client, user, other_user, ingest):
    private, public = ingest(user, seed=1), ingest(user, seed=2, is_public=True)
    album = services.album_create(owner=user, name="Mixed", is_public=True)
    services.album_add_images(album=album, images=[private, public])
    theirs = api_token_create(user=other_user, name="t")[1]
    listing = client.get("/api/albums", **_auth(theirs)).json()
    assert [(a["id"], a["image_count"]) for a in listing["items"]] == [(album.pk, 1)]
    images = client.get(f"/api/images?album={album.pk}", **_auth(theirs)).json()
    assert [i["id"] for i in images["items"]] == [public.pk]
    mine = api_token_create(user=user, name="u")[1]
    assert client.get("/api/albums", **_auth(mine)).json()["items"][0]["image_count"] == 2
