"""Review per image: the task view, its actions, moving through the album, who reviewed what."""

import pytest
from django.urls import reverse

from gallery import services as gallery_services
from imagineer.testing import image_bytes
from labeling.models import Label, LabelKind, ReviewState

pytestmark = pytest.mark.usefixtures("media_root")


@pytest.fixture
def album(user, ingest):
    album = gallery_services.album_create(owner=user, name="Set")
    images = [ingest(user, image_bytes("PNG", seed=s), filename=f"{s}.png") for s in range(3)]
    gallery_services.album_add_images(album=album, images=images)
    for image in images:
        for value, confidence in (("red theme", 0.99), ("long hair", 0.82)):
            Label.objects.create(image=image, kind=LabelKind.TAG, value=value, source="tagger",
                                 confidence=confidence, model="wd-tagger:tiny")
        Label.objects.create(image=image, kind=LabelKind.CAPTION, value="cat cat", source="captioner")
    return album, images


def _url(image, album=None):
    url = reverse("labeling:review_image", args=[image.pk])
    return f"{url}?album={album.pk}" if album else url


def _decide(client, image, **data):
    return client.post(reverse("labeling:review_image_decide", args=[image.pk]), data)


def test_the_task_view_shows_the_image_large_with_every_label_and_the_neighbours(user_client, album):
    album, images = album
    page = user_client.get(_url(images[1], album))
    assert page.status_code == 200
    html = page.content.decode()
    assert reverse("gallery:image_preview", args=[images[1].pk]) in html
    assert html.count('class="task-label') == 3 and "0.82" in html and "wd-tagger:tiny" in html
    assert f'href="{_url(images[0], album)}" id="task-previous"' in html
    assert f'{_url(images[2], album)}" id="task-next"' in html
    assert "2 of 3" in html
    assert "js/review_task.js" in html and "<script>" not in html  # keyboard through the static file only


def test_accept_one_reject_one_and_edit_one_records_the_reviewer(user, user_client, album):
    album, images = album
    image = images[0]
    red = Label.objects.get(image=image, value="red theme")
    hair = Label.objects.get(image=image, value="long hair")
    caption = Label.objects.get(image=image, kind=LabelKind.CAPTION)
    _decide(user_client, image, decision="approve", ids=[red.pk], album=album.pk)
    _decide(user_client, image, decision="reject", ids=[hair.pk], album=album.pk)
    response = _decide(user_client, image, decision="edit", label=caption.pk, value="a red cat", album=album.pk)
    assert response.status_code == 302 and response["Location"] == _url(image, album)
    red.refresh_from_db()
    hair.refresh_from_db()
    caption.refresh_from_db()
    assert (red.review_state, red.reviewed_by) == (ReviewState.APPROVED, user)
    assert (hair.review_state, hair.reviewed_by) == (ReviewState.REJECTED, user)
    assert (caption.value, caption.source, caption.review_state, caption.reviewed_by) == (
        "a red cat", "manual", ReviewState.APPROVED, user)
    # Other images' labels are untouched.
    assert set(Label.objects.exclude(image=image).values_list("review_state", flat=True)) == {ReviewState.PENDING}


def test_accept_all_decides_only_this_images_pending_labels_and_moves_on(user, user_client, album):
    album, images = album
    hair = Label.objects.get(image=images[0], value="long hair")
    _decide(user_client, images[0], decision="reject", ids=[hair.pk])
    response = _decide(user_client, images[0], decision="approve", all="1", advance="1", album=album.pk)
    assert response["Location"] == _url(images[1], album)
    states = dict(Label.objects.filter(image=images[0]).values_list("value", "review_state"))
    assert states == {"red theme": "approved", "long hair": "rejected", "cat cat": "approved"}
    assert set(Label.objects.exclude(image=images[0]).values_list("review_state", flat=True)) == {"pending"}
    last = _decide(user_client, images[2], decision="reject", all="1", advance="1", album=album.pk)
    assert last["Location"] == _url(images[2], album)  # the last image: stay
    assert set(Label.objects.filter(image=images[2]).values_list("review_state", flat=True)) == {"rejected"}


def test_without_an_album_it_walks_the_images_with_pending_labels(user_client, album):
    _, images = album
    first = user_client.get(reverse("labeling:review_image_first"))
    assert first["Location"] == _url(images[0])
    response = _decide(user_client, images[0], decision="approve", all="1", advance="1")
    assert response["Location"] == _url(images[1])


def test_ids_of_other_images_labels_are_ignored_and_other_users_get_404(user_client, other_client, album):
    album, images = album
    other_label = Label.objects.get(image=images[1], value="red theme")
    _decide(user_client, images[0], decision="approve", ids=[other_label.pk])
    other_label.refresh_from_db()
    assert other_label.review_state == ReviewState.PENDING
    assert other_client.get(_url(images[0])).status_code == 404
    assert other_client.get(_url(images[0], album)).status_code == 404
    assert _decide(other_client, images[0], decision="approve", all="1").status_code == 404
    assert user_client.get(reverse("labeling:review_image", args=[images[0].pk]) + "?album=abc").status_code == 404
    assert set(Label.objects.values_list("review_state", flat=True)) == {ReviewState.PENDING}


def test_the_list_view_stays(user_client, album):
    assert user_client.get(reverse("labeling:review")).status_code == 200
