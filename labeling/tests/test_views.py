import io
import json
import zipfile

import pytest

from gallery import services as gallery_services
from imagineer.testing import image_bytes
from labeling import services
from labeling.backends import LabelResult
from labeling.models import Label, LabelingJob, LabelKind

pytestmark = pytest.mark.usefixtures("media_root")

HTMX = {"HTTP_HX_REQUEST": "true"}


def _machine(image, **kw):
    base = {"caption": "a fox", "tags": ["fox"], "categories": [], "nsfw": False, "nsfw_confidence": 0.9,
            "model": "m", "version": "1"}
    services.labels_store_result(image=image, result=LabelResult(**{**base, **kw}), source="claude")


def test_the_image_page_shows_labels_grouped_with_source_and_confidence(user_client, user, ingest):
    image = ingest(user)
    _machine(image)
    html = user_client.get(f"/gallery/images/{image.pk}/").content.decode()
    assert 'id="labels-panel"' in html
    for text in ("Caption", "a fox", "Tag", "Claude 0.90", "Pending review", "Add a tag", "Your caption"):
        assert text in html, text


def test_adding_a_tag_with_htmx_returns_the_panel(user_client, user, ingest):
    image = ingest(user)
    response = user_client.post(f"/labeling/images/{image.pk}/tags/", {"value": "Sunset"}, **HTMX)
    assert response.status_code == 200
    assert "<html" not in response.content.decode() and "sunset" in response.content.decode()
    assert Label.objects.get(image=image).value == "sunset"
    bad = user_client.post(f"/labeling/images/{image.pk}/tags/", {"value": "!!!"}, **HTMX)
    assert bad.status_code == 400 and "letter or digit" in bad.content.decode()


def test_caption_edit_and_remove_inline(user_client, user, ingest):
    image = ingest(user)
    user_client.post(f"/labeling/images/{image.pk}/caption/", {"text": "my caption"}, **HTMX)
    label = Label.objects.get(kind=LabelKind.CAPTION)
    assert label.value == "my caption" and label.created_by == user
    user_client.post(f"/labeling/labels/{label.pk}/edit/", {"value": "better caption"}, **HTMX)
    label.refresh_from_db()
    assert label.value == "better caption"
    user_client.post(f"/labeling/labels/{label.pk}/delete/", **HTMX)
    assert not Label.objects.exists()


def test_others_cannot_edit_my_labels(other_client, user, ingest):
    image = ingest(user, is_public=True)
    _machine(image)
    label = Label.objects.first()
    assert other_client.post(f"/labeling/images/{image.pk}/tags/", {"value": "spam"}).status_code == 404
    assert other_client.post(f"/labeling/labels/{label.pk}/delete/").status_code == 404
    assert other_client.post(f"/labeling/labels/{label.pk}/edit/", {"value": "x"}).status_code == 404
    assert Label.objects.filter(pk=label.pk).exists() and not Label.objects.filter(value="spam").exists()


def test_tag_autocomplete_suggests_existing_tags(user_client, user, ingest):
    image = ingest(user)
    services.tag_add(image=image, user=user, value="sunset")
    services.tag_add(image=image, user=user, value="sunrise")
    services.tag_add(image=image, user=user, value="beach")
    html = user_client.get("/labeling/tags/suggest/?value=sun").content.decode()
    assert 'value="sunset"' in html and 'value="sunrise"' in html and "beach" not in html


def test_review_queue_approves_and_rejects_in_bulk(user_client, user, other_user, ingest):
    mine = ingest(user, seed=1)
    theirs = ingest(other_user, seed=2)
    _machine(mine)
    _machine(theirs, caption="their fox")
    page = user_client.get("/labeling/review/").content.decode()
    assert "a fox" in page and "their fox" not in page and "3 pending labels" in page
    ids = list(Label.objects.filter(image=mine).values_list("pk", flat=True))
    response = user_client.post("/labeling/review/decide/", {"ids": ids[:1], "decision": "approve"}, **HTMX)
    assert "1 label(s) approved" in response.content.decode()
    response = user_client.post("/labeling/review/decide/", {"ids": ids[1:], "decision": "reject"})
    assert response.status_code == 302
    states = dict(Label.objects.filter(image=mine).values_list("pk", "review_state"))
    assert states == {ids[0]: "approved", ids[1]: "rejected", ids[2]: "rejected"}


def test_start_a_job_from_the_gallery_selection(user_client, user, ingest, redis_conn):
    images = [ingest(user, seed=s) for s in range(2)]
    ids = ",".join(str(i.pk) for i in images)
    response = user_client.post("/labeling/start/", {"ids": ids, "backend": "local"})
    job = LabelingJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/labeling/jobs/{job.pk}/"
    assert job.owner == user and job.image_ids == [i.pk for i in images]
    status = user_client.get(f"/labeling/jobs/{job.pk}/", **HTMX).content.decode()
    assert 'hx-trigger="every 2s"' in status and "Cancel" in status and "<progress" in status
    user_client.post(f"/labeling/jobs/{job.pk}/cancel/")
    job.refresh_from_db()
    assert job.status == "cancelled"
    final = user_client.get(f"/labeling/jobs/{job.pk}/", **HTMX).content.decode()
    assert "every 2s" not in final


def test_jobs_of_others_are_404(other_client, user, ingest, redis_conn):
    image = ingest(user)
    job = services.labeling_job_start(user=user, backend="local", image_ids=[image.pk])
    assert other_client.get(f"/labeling/jobs/{job.pk}/").status_code == 404
    assert other_client.post(f"/labeling/jobs/{job.pk}/cancel/").status_code == 404


def test_starting_with_redis_down_is_a_message_and_creates_nothing(user_client, user, ingest, settings):
    settings.RQ_QUEUES = {name: {"URL": "redis://127.0.0.1:1/0"} for name in settings.RQ_QUEUES}
    image = ingest(user)
    response = user_client.post("/labeling/start/", {"ids": str(image.pk), "backend": "local"}, follow=True)
    assert response.status_code == 200 and "not reachable" in response.content.decode()
    assert not LabelingJob.objects.exists()


def test_analytics_counts_tags_nsfw_and_missing_captions(user_client, user, ingest):
    album = gallery_services.album_create(owner=user, name="Stats")
    images = [ingest(user, seed=s) for s in range(4)]
    gallery_services.album_add_images(album=album, images=images[:3])
    services.tag_add(image=images[0], user=user, value="fox")
    services.tag_add(image=images[1], user=user, value="fox")
    services.caption_set(image=images[0], user=user, text="hello")
    gallery_services.images_set_nsfw(user=user, ids=[images[2].pk], nsfw=True)
    html = user_client.get(f"/labeling/analytics/?album={album.pk}").content.decode()
    assert 'data-testid="without-caption">2<' in html
    assert 'data-testid="nsfw-share">33%<' in html
    assert "fox <small>2</small>" in html


def test_export_zip_in_both_formats(user_client, user, ingest):
    album = gallery_services.album_create(owner=user, name="Foxes")
    a = ingest(user, image_bytes("PNG", seed=1), filename="a.png")
    b = ingest(user, seed=2)
    gallery_services.album_add_images(album=album, images=[a, b])
    services.caption_set(image=a, user=user, text="a fox")
    services.tag_add(image=a, user=user, value="orange")
    response = user_client.get(f"/labeling/albums/{album.pk}/export.zip?format=kohya&append_tags=on")
    assert response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert sorted(archive.namelist()) == ["1_foxes/00001.png", "1_foxes/00001.txt", "1_foxes/00002.jpg",
                                          "1_foxes/00002.txt", "provenance.jsonl"]
    assert archive.read("1_foxes/00001.txt").decode() == "a fox, orange\n"
    assert archive.read("1_foxes/00002.txt").decode() == "Foxes\n"
    assert archive.read("1_foxes/00001.png") == image_bytes("PNG", seed=1)
    response = user_client.get(f"/labeling/albums/{album.pk}/export.zip?format=jsonl")
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    lines = [json.loads(x) for x in archive.read("metadata.jsonl").decode().splitlines()]
    assert [(x["file_name"], x["text"]) for x in lines] == [("00001.png", "a fox"), ("00002.jpg", "Foxes")]


def test_export_of_someone_elses_album_is_404(other_client, user):
    album = gallery_services.album_create(owner=user, name="Mine", is_public=True)
    assert other_client.get(f"/labeling/albums/{album.pk}/export.zip?format=kohya").status_code == 404


def test_each_label_can_be_edited_inline_by_its_owner(user_client, other_client, user, ingest):
    image = ingest(user, is_public=True)
    label = services.tag_add(image=image, user=user, value="sunset")
    mine = user_client.get(f"/gallery/images/{image.pk}/").content.decode()
    assert f'hx-post="/labeling/labels/{label.pk}/edit/"' in mine
    theirs = other_client.get(f"/gallery/images/{image.pk}/").content.decode()
    assert f"/labeling/labels/{label.pk}/edit/" not in theirs and "sunset" in theirs
    response = user_client.post(f"/labeling/labels/{label.pk}/edit/", {"value": "Golden Sunset"}, **HTMX)
    assert response.status_code == 200 and "golden sunset" in response.content.decode()
    label.refresh_from_db()
    assert label.value == "golden sunset"


@pytest.fixture
def borrowed(user, other_user, ingest):
    """Bob's album holds his own picture and Alice's public one, which she has since made private."""
    hers = ingest(user, image_bytes("PNG", seed=7), filename="hers.png", is_public=True)
    his = ingest(other_user, image_bytes("PNG", seed=8), filename="his.png")
    album = gallery_services.album_create(owner=other_user, name="Borrowed")
    gallery_services.album_add_images(album=album, images=[hers, his])
    gallery_services.images_set_public(user=user, ids=[hers.pk], public=False)
    return album, hers, his


def test_an_export_leaves_out_images_that_turned_private(other_client, borrowed, tmp_path):
    album, hers, his = borrowed
    response = other_client.get(f"/labeling/albums/{album.pk}/export.zip?format=kohya")
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert sorted(archive.namelist()) == ["1_borrowed/00001.png", "1_borrowed/00001.txt", "provenance.jsonl"]
    assert len(archive.read("provenance.jsonl").decode().splitlines()) == 1  # nor the private one's provenance
    assert archive.read("1_borrowed/00001.png") == image_bytes("PNG", seed=8)
    # The management command exports what the album's owner may see.
    from django.core.management import call_command

    call_command("export_dataset", "--album", "Borrowed", str(tmp_path / "out"), stdout=io.StringIO())
    assert sorted(p.name for p in (tmp_path / "out" / "1_borrowed").iterdir()) == ["00001.png", "00001.txt"]
    assert (tmp_path / "out" / "1_borrowed" / "00001.png").read_bytes() == image_bytes("PNG", seed=8)
    html = other_client.get(f"/labeling/analytics/?album={album.pk}").content.decode()
    assert 'data-testid="without-caption">1<' in html


def test_a_labeling_job_over_an_album_takes_only_images_the_user_may_see_and_owns(other_user, staff_user,
                                                                                   borrowed):
    album, hers, his = borrowed
    job = services.labeling_job_start(user=other_user, backend="local", album=album, enqueue=False)
    assert job.counters["total"] == 1 and list(services.job_images(job)) == [his]
    gallery_services.images_trash(user=other_user, ids=[his.pk])
    with pytest.raises(services.LabelInputError):
        services.labeling_job_start(user=other_user, backend="local", album=album, enqueue=False)
    staff_job = services.labeling_job_start(user=staff_user, backend="local", album=album, enqueue=False)
    assert list(services.job_images(staff_job)) == [hers]


def test_the_job_page_shows_its_messages_once_and_clears_them_when_the_job_ends(user_client, user, ingest, redis_conn):
    image = ingest(user)
    page = user_client.post("/labeling/start/", {"ids": str(image.pk), "backend": "local"}, follow=True)
    job = LabelingJob.objects.get()
    assert "Labeling started." in page.content.decode()
    assert 'id="messages" hx-swap-oob' not in user_client.get(f"/labeling/jobs/{job.pk}/", **HTMX).content.decode()
    partial = user_client.post(f"/labeling/jobs/{job.pk}/cancel/", **HTMX).content.decode()
    assert 'hx-swap-oob="innerHTML"' in partial and "Cancelling; labels already written are kept." in partial
    assert "Cancelling; labels" not in user_client.get(f"/labeling/jobs/{job.pk}/").content.decode()
    job.refresh_from_db()
    assert job.status == "cancelled"  # a queued job stops at once: the poll that sees it clears stale messages
    final = user_client.get(f"/labeling/jobs/{job.pk}/", **HTMX).content.decode()
    assert '<div id="messages" hx-swap-oob="innerHTML"></div>' in final
