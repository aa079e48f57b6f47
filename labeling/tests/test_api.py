"""Labeling JSON API: labels per image, labeling jobs, the image JSON's tags and caption, access rules."""

import pytest

from gallery import services as gallery_services
from imagineer.models import JobStatus
from imagineer.services import api_token_create
from imagineer.testing import image_bytes
from labeling.models import Label, LabelingJob, LabelKind, ReviewState

pytestmark = pytest.mark.usefixtures("media_root")


@pytest.fixture
def auth(user):
    return {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, name='t')[1]}"}


@pytest.fixture
def image(user, ingest):
    return ingest(user, image_bytes("PNG", seed=1), filename="1.png")


@pytest.fixture
def theirs(other_user, ingest):
    return ingest(other_user, image_bytes("PNG", seed=2), filename="2.png")


def test_labels_list_create_update_delete(client, auth, image, user):
    tagger = Label.objects.create(image=image, kind=LabelKind.TAG, value="red theme", source="tagger",
                                  confidence=0.99)
    created = client.post(f"/api/images/{image.pk}/labels", {"kind": "tag", "value": "Blue Sky"},
                          content_type="application/json", **auth)
    assert created.status_code == 201, created.content
    assert created.json()["value"] == "blue sky" and created.json()["source"] == "manual"
    assert created.json()["review_state"] == "approved" and created.json()["created_by"] == "alice"
    caption = client.post(f"/api/images/{image.pk}/labels", {"kind": "caption", "value": "a sky"},
                          content_type="application/json", **auth).json()
    listing = client.get(f"/api/images/{image.pk}/labels", **auth).json()
    assert [(x["kind"], x["value"]) for x in listing] == [("caption", "a sky"), ("tag", "red theme"),
                                                          ("tag", "blue sky")]
    assert [x["value"] for x in client.get(f"/api/images/{image.pk}/labels?kind=caption", **auth).json()] == ["a sky"]

    rejected = client.patch(f"/api/labels/{tagger.pk}", {"review_state": "rejected"},
                            content_type="application/json", **auth).json()
    assert rejected["review_state"] == "rejected" and rejected["reviewed_by"] == "alice"
    edited = client.patch(f"/api/labels/{caption['id']}", {"value": "a blue sky"},
                          content_type="application/json", **auth)
    assert edited.status_code == 200 and edited.json()["value"] == "a blue sky"
    assert client.delete(f"/api/labels/{created.json()['id']}", **auth).status_code == 204
    assert set(Label.objects.values_list("value", "review_state")) == {
        ("red theme", ReviewState.REJECTED), ("a blue sky", ReviewState.APPROVED)}


def test_bad_label_input_is_a_400_that_changes_nothing(client, auth, image):
    manual = Label.objects.create(image=image, kind=LabelKind.TAG, value="mine", source="manual",
                                  review_state=ReviewState.APPROVED)
    for payload in ({"kind": "nsfw", "value": "nsfw"}, {"kind": "tag", "value": "!!!"},
                    {"kind": "tag", "value": "x" * 65}, {"kind": "tag"}):
        response = client.post(f"/api/images/{image.pk}/labels", payload, content_type="application/json", **auth)
        assert response.status_code in (400, 422), (payload, response.status_code)
    assert client.patch(f"/api/labels/{manual.pk}", {"review_state": "rejected"},
                        content_type="application/json", **auth).status_code == 400
    assert client.patch(f"/api/labels/{manual.pk}", {}, content_type="application/json", **auth).status_code == 400
    assert list(Label.objects.values_list("value", "review_state")) == [("mine", ReviewState.APPROVED)]


def test_other_users_images_labels_and_jobs_are_404(client, auth, theirs, other_user):
    label = Label.objects.create(image=theirs, kind=LabelKind.TAG, value="secret", source="manual")
    job = LabelingJob.objects.create(owner=other_user, backend="local", image_ids=[theirs.pk])
    assert client.get(f"/api/images/{theirs.pk}/labels", **auth).status_code == 404
    assert client.post(f"/api/images/{theirs.pk}/labels", {"kind": "tag", "value": "x"},
                       content_type="application/json", **auth).status_code == 404
    assert client.patch(f"/api/labels/{label.pk}", {"value": "y"}, content_type="application/json",
                        **auth).status_code == 404
    assert client.delete(f"/api/labels/{label.pk}", **auth).status_code == 404
    assert client.get(f"/api/labeling/jobs/{job.pk}", **auth).status_code == 404
    assert client.post(f"/api/labeling/jobs/{job.pk}/cancel", **auth).status_code == 404
    album = gallery_services.album_create(owner=other_user, name="Theirs")
    assert client.post("/api/labeling/jobs", {"backend": "local", "album_id": album.pk},
                       content_type="application/json", **auth).status_code == 404
    response = client.post("/api/labeling/jobs", {"backend": "local", "image_ids": [theirs.pk]},
                           content_type="application/json", **auth)
    assert response.status_code == 400 and "none of the chosen images are yours" in response.json()["detail"]
    label.refresh_from_db()
    job.refresh_from_db()
    assert label.value == "secret" and not job.cancel_requested
    assert client.get(f"/api/images/{theirs.pk}/labels").status_code == 401  # no credentials at all


def test_public_images_labels_are_readable_but_not_writable(client, auth, theirs):
    theirs.is_public = True
    theirs.save()
    Label.objects.create(image=theirs, kind=LabelKind.TAG, value="open", source="manual")
    assert [x["value"] for x in client.get(f"/api/images/{theirs.pk}/labels", **auth).json()] == ["open"]
    assert client.post(f"/api/images/{theirs.pk}/labels", {"kind": "tag", "value": "x"},
                       content_type="application/json", **auth).status_code == 404


def test_a_job_starts_runs_and_reports_through_the_api(client, auth, user, ingest, run_worker, settings,
                                                       tiny_tagger_dir):
    from labeling.tests.conftest import solid_png

    settings.LABEL_TAGGER_DIR = tiny_tagger_dir
    red = ingest(user, solid_png((255, 0, 0)), filename="red.png")
    album = gallery_services.album_create(owner=user, name="Red")
    gallery_services.album_add_images(album=album, images=[red])
    started = client.post("/api/labeling/jobs", {"backend": "tagger", "album_id": album.pk},
                          content_type="application/json", **auth)
    assert started.status_code == 201, started.content
    assert started.json()["status"] == "queued" and started.json()["counters"] == {"total": 1}
    run_worker("label")
    status = client.get(f"/api/labeling/jobs/{started.json()['id']}", **auth).json()
    assert status["status"] == JobStatus.SUCCEEDED and status["progress"] == 1.0
    assert status["counters"]["labelled"] == 1
    assert client.post("/api/labeling/jobs", {"backend": "gpt", "album_id": album.pk},
                       content_type="application/json", **auth).status_code == 422

    # The image's JSON carries its tags and training caption.
    body = client.get(f"/api/images/{red.pk}", **auth).json()
    assert body["tags"] == ["red theme", "long hair"] and body["training_caption"] == "red theme, long hair"
    client.post(f"/api/images/{red.pk}/labels", {"kind": "caption", "value": "a red square"},
                content_type="application/json", **auth)
    assert client.get(f"/api/images/{red.pk}", **auth).json()["training_caption"] == "a red square"


def test_cancelling_a_queued_job_through_the_api(client, auth, image):
    started = client.post("/api/labeling/jobs", {"backend": "local", "image_ids": [image.pk]},
                          content_type="application/json", **auth).json()
    cancelled = client.post(f"/api/labeling/jobs/{started['id']}/cancel", **auth)
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["cancel_requested"] is True


def test_the_labeling_api_is_in_the_openapi_schema(client, auth):
    schema = client.get("/api/openapi.json", **auth).json()
    paths = schema["paths"]
    for path, methods in {"/api/images/{image_id}/labels": {"get", "post"},
                          "/api/labels/{label_id}": {"patch", "delete"},
                          "/api/labeling/jobs": {"post"},
                          "/api/labeling/jobs/{job_id}": {"get"},
                          "/api/labeling/jobs/{job_id}/cancel": {"post"}}.items():
        assert methods <= set(paths[path]), path
    image_schema = schema["components"]["schemas"]["ImageOut"]["properties"]
    assert {"tags", "training_caption"} <= set(image_schema)


def test_a_page_of_images_reads_their_labels_in_one_query(client, auth, user, ingest):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def label_queries(count: int) -> tuple[int, list[dict]]:
        with CaptureQueriesContext(connection) as queries:
            response = client.get("/api/images", {"limit": count}, **auth)
        assert response.status_code == 200
        return sum('"labeling_label"' in q["sql"] for q in queries.captured_queries), response.json()["items"]

    images = [ingest(user, image_bytes("PNG", seed=10 + n), filename=f"{n}.png") for n in range(6)]
    for n, image in enumerate(images):
        Label.objects.create(image=image, kind=LabelKind.TAG, value=f"tag {n}", source="tagger",
                             review_state=ReviewState.APPROVED)

    one, _ = label_queries(1)
    six, items = label_queries(6)

    assert one == six == 1
    # Each image still carries its own labels, not a neighbour's.
    assert {item["id"]: item["tags"] for item in items} == {image.pk: [f"tag {n}"] for n, image in enumerate(images)}


# Album roles: the API follows the pages (a member reads the labels of the album's images, an editor changes
# them like the image page's panel lets them; Image.can_edit_captions).

LABEL_ROLES = ("viewer", "contributor", "editor", "owner", "other")


@pytest.mark.parametrize("who", LABEL_ROLES)
def test_album_members_read_labels_of_the_shared_albums_images(client, roles_album, who):
    client = roles_album["clients"][who]
    for kind in ("own", "contributed"):
        image = roles_album[kind]
        response = client.get(f"/api/images/{image.pk}/labels")
        page = client.get(f"/gallery/images/{image.pk}/").status_code
        # (A contributor's private image in the album is the album owner's to open too, on the page and here.)
        expected = 404 if who == "other" else 200
        assert response.status_code == page == expected, (who, kind)
        if response.status_code == 200:
            assert "a grey cat" in [label["value"] for label in response.json()]
    # Nothing outside the album: the owner's other private image stays hers.
    outside = client.get(f"/api/images/{roles_album['outside'].pk}/labels").status_code
    assert outside == (200 if who == "owner" else 404)


@pytest.mark.parametrize("who", LABEL_ROLES)
def test_album_editors_change_labels_through_the_api_as_on_the_page(client, roles_album, who):
    client, image, pending = roles_album["clients"][who], roles_album["own"], roles_album["pending"]
    edits = who in ("editor", "owner")
    caption = Label.objects.get(image=image, kind=LabelKind.CAPTION)

    created = client.post(f"/api/images/{image.pk}/labels", {"kind": "tag", "value": f"by {who}"},
                          content_type="application/json")
    assert created.status_code == (201 if edits else 404), created.content
    assert Label.objects.filter(image=image, value=f"by {who}").exists() == edits
    edited = client.patch(f"/api/labels/{caption.pk}", {"value": f"caption by {who}"},
                          content_type="application/json")
    assert edited.status_code == (200 if edits else 404)
    assert Label.objects.filter(pk=caption.pk, value=f"caption by {who}").exists() == edits
    reviewed = client.patch(f"/api/labels/{pending.pk}", {"review_state": "approved"},
                            content_type="application/json")
    assert reviewed.status_code == (200 if edits else 404)
    pending.refresh_from_db()
    assert (pending.review_state == ReviewState.APPROVED) == edits
    if edits:
        assert reviewed.json()["review_state"] == "approved" and reviewed.json()["reviewed_by"] == (
            "alice" if who == "owner" else who)
    deleted = client.delete(f"/api/labels/{pending.pk}")
    assert deleted.status_code == (204 if edits else 404)
    assert Label.objects.filter(pk=pending.pk).exists() != edits


def test_an_album_editor_changes_no_labels_outside_what_the_album_gives_them(client, roles_album):
    editor = roles_album["clients"]["editor"]
    # The contributor's image: yes (every contributor's images are the album's to caption).
    contributed = roles_album["contributed"]
    assert editor.post(f"/api/images/{contributed.pk}/labels", {"kind": "caption", "value": "edited"},
                       content_type="application/json").status_code == 201
    # bob's public image in the album (he is no member) and the owner's image in no album: no.
    for kind in ("bobs", "outside"):
        image = roles_album[kind]
        assert editor.post(f"/api/images/{image.pk}/labels", {"kind": "tag", "value": "x"},
                           content_type="application/json").status_code == 404
        label = Label.objects.get(image=image, kind=LabelKind.CAPTION)
        assert editor.patch(f"/api/labels/{label.pk}", {"value": "hacked"},
                            content_type="application/json").status_code == 404
        assert editor.delete(f"/api/labels/{label.pk}").status_code == 404
        assert Label.objects.get(pk=label.pk).value == "a grey cat"
    # Out of the album, out of reach.
    gallery_services.album_remove_images(album=roles_album["album"], ids=[contributed.pk])
    assert editor.post(f"/api/images/{contributed.pk}/labels", {"kind": "tag", "value": "x"},
                       content_type="application/json").status_code == 404
