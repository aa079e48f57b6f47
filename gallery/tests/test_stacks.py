"""Stacks: near duplicates under one chosen image; the grid shows one tile per stack."""

import io
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from PIL import Image as PILImage

from gallery import services, stacks
from gallery.models import Image
from gallery.selectors import duplicate_groups
from imagineer.testing import image_bytes


def _near_copy(data: bytes, size=(150, 100), quality=60) -> bytes:
    out = io.BytesIO()
    PILImage.open(io.BytesIO(data)).convert("RGB").resize(size).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _grid_ids(client, url="/gallery/mine/"):
    return [int(x) for x in re.findall(r'data-id="(\d+)"', client.get(url).content.decode())]


@pytest.fixture
def trio(user, ingest):
    data = image_bytes("PNG", size=(300, 200), seed=11)
    base = ingest(user, data, filename="a.png")
    near = ingest(user, _near_copy(data), filename="b.jpg")
    nearer = ingest(user, _near_copy(data, size=(240, 160), quality=80), filename="c.jpg")
    far = ingest(user, image_bytes("PNG", size=(300, 200), seed=77), filename="d.png")
    return base, near, nearer, far


def test_stacking_from_the_duplicates_page_leaves_one_tile_and_resolves_the_group(user_client, trio):
    base, near, nearer, far = trio
    assert {base.pk, near.pk, nearer.pk} in [{i.pk for i in g} for g in duplicate_groups(owner=base.owner)]
    response = user_client.post("/gallery/duplicates/resolve/", {
        "keep": near.pk, "group": [base.pk, near.pk, nearer.pk], "how": "stack"})
    assert response.status_code == 302
    assert set(Image.objects.filter(stack_top=near).values_list("pk", flat=True)) == {base.pk, nearer.pk}
    assert Image.objects.filter(trashed_at__isnull=False).count() == 0  # stacking trashes nothing
    ids = _grid_ids(user_client)
    assert near.pk in ids and far.pk in ids and base.pk not in ids and nearer.pk not in ids
    assert "⧉ 3" in user_client.get("/gallery/mine/").content.decode()
    assert duplicate_groups(owner=base.owner) == []
    detail = user_client.get(f"/gallery/images/{near.pk}/").content.decode()
    assert 'id="stack"' in detail and f'data-id="{base.pk}"' in detail
    # Albums keep every image: stacks only fold the gallery grids.
    album = services.album_create(owner=base.owner, name="All")
    services.album_add_images(album=album, images=[base, near, nearer])
    assert set(_grid_ids(user_client, f"/gallery/albums/{album.pk}/")) == {base.pk, near.pk, nearer.pk}
    # Unstack all: every image is a tile again.
    user_client.post("/gallery/bulk/", {"action": "unstack", "ids": f"{base.pk},{nearer.pk}"})
    assert {base.pk, near.pk, nearer.pk, far.pk} <= set(_grid_ids(user_client))


def test_restacking_moves_a_whole_stack_and_a_trashed_top_shows_its_members(user, trio):
    base, near, nearer, far = trio
    stacks.stack_create(user=user, top_id=near.pk, ids=[base.pk])
    stacks.stack_create(user=user, top_id=nearer.pk, ids=[near.pk])  # near's stack joins nearer's
    assert set(Image.objects.filter(stack_top=nearer).values_list("pk", flat=True)) == {base.pk, near.pk}
    services.images_trash(user=user, ids=[nearer.pk])
    visible = set(Image.objects.filter(stacks.unstacked_q(), trashed_at__isnull=True).values_list("pk", flat=True))
    assert {base.pk, near.pk} <= visible


def test_only_the_owner_stacks_their_images(user, other_user, trio, ingest, client):
    base, near, *_ = trio
    theirs = ingest(other_user, seed=5)
    with pytest.raises(stacks.StackError):
        stacks.stack_create(user=other_user, top_id=base.pk, ids=[near.pk])
    with pytest.raises(stacks.StackError):
        stacks.stack_create(user=user, top_id=base.pk, ids=[theirs.pk])
    client.force_login(other_user)
    client.post("/gallery/bulk/", {"action": "stack", "ids": f"{theirs.pk},{base.pk}"})
    client.post("/gallery/duplicates/resolve/", {"keep": theirs.pk, "group": [theirs.pk, base.pk], "how": "stack"})
    assert not Image.objects.filter(stack_top__isnull=False).exists()


def test_upload_stacks_near_duplicates_only_when_asked(user_client, user):
    data = image_bytes("PNG", size=(300, 200), seed=11)

    def upload(content, name, **extra):
        return user_client.post("/gallery/upload/file/", {"file": SimpleUploadedFile(name, content), **extra}).json()

    base = upload(data, "a.png")["id"]
    plain = upload(_near_copy(data), "b.jpg")["id"]
    stacked = upload(_near_copy(data, size=(240, 160), quality=80), "c.jpg", stack="on")["id"]
    lone = upload(image_bytes("PNG", size=(300, 200), seed=77), "d.png", stack="on")["id"]
    assert Image.objects.get(pk=plain).stack_top_id is None
    assert Image.objects.get(pk=stacked).stack_top_id in (base, plain)
    assert Image.objects.get(pk=lone).stack_top_id is None


def test_the_api_upload_stacks_near_duplicates_only_when_asked(client, user):
    from imagineer.services import api_token_create

    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, name='t')[1]}"}
    data = image_bytes("PNG", size=(300, 200), seed=11)

    def upload(content, name, **extra):
        response = client.post("/api/images", {"file": SimpleUploadedFile(name, content), **extra}, **auth)
        assert response.status_code == 201, response.content
        return response.json()["image"]

    base = upload(data, "a.png")
    plain = upload(_near_copy(data), "b.jpg")
    stacked = upload(_near_copy(data, size=(240, 160), quality=80), "c.jpg", stack="true")
    lone = upload(image_bytes("PNG", size=(300, 200), seed=77), "d.png", stack="true")
    assert plain["stack_top_id"] is None and lone["stack_top_id"] is None
    assert stacked["stack_top_id"] in (base["id"], plain["id"])
    assert client.get(f"/api/images/{stacked['id']}", **auth).json()["stack_top_id"] == stacked["stack_top_id"]


def test_index_images_stack_option(user, tmp_path):
    data = image_bytes("PNG", size=(300, 200), seed=11)
    (tmp_path / "a.png").write_bytes(data)
    (tmp_path / "b.jpg").write_bytes(_near_copy(data))
    (tmp_path / "c.png").write_bytes(image_bytes("PNG", size=(300, 200), seed=77))
    call_command("index_images", str(tmp_path), "--owner", user.username, "--stack", "--no-progress",
                 stdout=io.StringIO(), stderr=io.StringIO())
    rows = {_name(i.original_filename): i for i in Image.objects.filter(owner=user)}
    assert len(rows) == 3
    stacked = [i for i in rows.values() if i.stack_top_id]
    assert len(stacked) == 1 and {stacked[0].pk, stacked[0].stack_top_id} == {rows["a.png"].pk, rows["b.jpg"].pk}
    assert rows["c.png"].stack_top_id is None


def _name(value):  # the indexer may store a path; the tests compare file names
    return value.rsplit("/", 1)[-1]
