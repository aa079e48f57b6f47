"""Album editors "also remove images and edit captions": the album's caption tools, the review task and an
image's caption history open to them (and to nobody else but the owner and staff), every link to those views
shows exactly when the view opens, and a tool run by an editor touches only the album's images."""

import re

import pytest
from django.urls import reverse

from labeling.models import CaptionRevision, Label, LabelKind, ReviewState

pytestmark = pytest.mark.usefixtures("media_root")

PEOPLE = ("anonymous", "other", "viewer", "contributor", "editor", "owner")
OPENS = {"editor", "owner"}


def _status(response) -> int:
    # Anonymous visitors are sent to log in; count that as "not opened".
    return 404 if response.status_code == 302 and "/accounts/login/" in response["Location"] else response.status_code


def _captions(roles_album) -> dict[str, str]:
    return {kind: Label.objects.get(image=roles_album[kind], kind=LabelKind.CAPTION).value
            for kind in ("own", "contributed", "bobs", "outside")}


@pytest.mark.parametrize("who", PEOPLE)
def test_the_album_caption_tools_open_to_its_editors_and_owner_only(roles_album, who):
    client, album = roles_album["clients"][who], roles_album["album"]
    assert _status(client.get(reverse("labeling:caption_tools", args=[album.pk]))) == (
        200 if who in OPENS else 404)
    before = _captions(roles_album)
    response = client.post(reverse("labeling:find_replace", args=[album.pk]), {"find": "grey", "replace": "black"})
    client.post(reverse("labeling:bulk_tag", args=[album.pk]), {"tag": "feline", "action": "add"})
    client.post(reverse("labeling:trigger_word_set", args=[album.pk]), {"trigger_word": f"zz{who}"})
    client.post(reverse("labeling:template_set", args=[album.pk]), {"template": "{trigger}, {caption}"})
    after = _captions(roles_album)
    album.refresh_from_db()
    if who not in OPENS:
        assert _status(response) == 404
        assert after == before and album.trigger_word == ""
        assert not Label.objects.filter(value="feline").exists()
        return
    assert response.status_code == 302 and album.trigger_word == f"zz{who}"
    tagged = set(Label.objects.filter(value="feline").values_list("image_id", flat=True))
    if who == "editor":
        # The owner's and the contributor's images in the album; never bob's (no member) nor one outside it.
        assert after == {"own": "a black cat", "contributed": "a black cat", "bobs": "a grey cat",
                         "outside": "a grey cat"}
        assert tagged == {roles_album["own"].pk, roles_album["contributed"].pk}
        editor = roles_album["people"]["editor"]
        assert set(CaptionRevision.objects.filter(user=editor).values_list("image_id", flat=True)) == tagged
    else:
        # The owner's tools keep to her own images, as before.
        assert after == {"own": "a black cat", "contributed": "a grey cat", "bobs": "a grey cat",
                         "outside": "a grey cat"}
        assert tagged == {roles_album["own"].pk}


def test_an_editors_tools_on_another_album_of_the_owner_are_404(roles_album, ingest):
    from gallery import services as gallery_services

    owner = roles_album["people"]["owner"]
    private = gallery_services.album_create(owner=owner, name="Private")
    gallery_services.album_add_images(album=private, images=[roles_album["outside"]])
    editor = roles_album["clients"]["editor"]
    assert editor.get(reverse("labeling:caption_tools", args=[private.pk])).status_code == 404
    assert editor.post(reverse("labeling:find_replace", args=[private.pk]),
                       {"find": "grey", "replace": "black"}).status_code == 404
    assert editor.get(reverse("labeling:review_image", args=[roles_album["outside"].pk])
                      + f"?album={private.pk}").status_code == 404
    assert _captions(roles_album)["outside"] == "a grey cat"


@pytest.mark.parametrize("who", PEOPLE)
def test_the_review_task_opens_to_the_albums_editors_and_owner_only(roles_album, who):
    client, album, image, pending = (roles_album["clients"][who], roles_album["album"], roles_album["own"],
                                     roles_album["pending"])
    task = reverse("labeling:review_image", args=[image.pk])
    assert _status(client.get(task)) == (200 if who in OPENS else 404)
    assert _status(client.get(f"{task}?album={album.pk}")) == (200 if who in OPENS else 404)
    first = client.get(reverse("labeling:review_image_first") + f"?album={album.pk}")
    assert _status(first) == (302 if who in OPENS else 404)
    response = client.post(reverse("labeling:review_image_decide", args=[image.pk]),
                           {"decision": "approve", "ids": [pending.pk], "album": album.pk})
    pending.refresh_from_db()
    assert (pending.review_state == ReviewState.APPROVED) == (who in OPENS)
    if who not in OPENS:
        assert _status(response) == 404
        return
    assert pending.reviewed_by == roles_album["people"][who]
    # The album's walk: the images whose captions this person may edit through it, nothing else.
    html = client.get(f"{task}?album={album.pk}").content.decode()
    count = 2 if who == "editor" else 1
    assert re.search(rf"1 of {count}\b", html), html[:2000]


@pytest.mark.parametrize("who", PEOPLE)
def test_caption_history_opens_to_whoever_may_edit_the_captions(roles_album, who):
    client = roles_album["clients"][who]
    for kind in ("own", "contributed", "bobs", "outside"):
        image = roles_album[kind]
        opens = image.can_edit_captions(roles_album["people"].get(who))
        expected = {"own": who in OPENS, "contributed": who in ("editor", "contributor", "owner"),
                    "bobs": who == "other", "outside": who == "owner"}[kind]
        assert opens == expected, (who, kind)
        status = _status(client.get(reverse("labeling:caption_history", args=[image.pk])))
        assert status == (200 if expected else 404), (who, kind)


def _links(html: str) -> set[str]:
    return {href.replace("&amp;", "&") for href in re.findall(r'href="(/labeling/[^"]+)"', html)}


@pytest.mark.parametrize("who", PEOPLE)
def test_the_labels_panel_links_exactly_what_opens(roles_album, who):
    """Every labeling link on an image page opens for the person it is shown to, and the caption history
    and review links show whenever those would open."""
    client = roles_album["clients"][who]
    for kind in ("own", "contributed", "bobs", "outside"):
        image = roles_album[kind]
        page = client.get(f"/gallery/images/{image.pk}/")
        if page.status_code != 200:
            continue
        html = page.content.decode()
        history = reverse("labeling:caption_history", args=[image.pk])
        review = reverse("labeling:review_image", args=[image.pk])
        opens = _status(client.get(history)) == 200
        assert (history in _links(html)) == opens == (_status(client.get(review)) == 200), (who, kind)
        assert (review in _links(html)) == opens, (who, kind)
        for link in _links(html):
            assert client.get(link).status_code == 200, (who, kind, link)
        # Labeling jobs write onto one's own images only: the job form shows to the image's owner alone.
        assert ('name="backend"' in html) == (image.owner == roles_album["people"].get(who)), (who, kind)


@pytest.mark.parametrize("who", ("editor", "owner"))
def test_the_caption_tools_page_links_only_what_opens(roles_album, who):
    client, album = roles_album["clients"][who], roles_album["album"]
    html = client.get(reverse("labeling:caption_tools", args=[album.pk])).content.decode()
    links = _links(html)
    assert f"/labeling/review/images/?album={album.pk}" in links
    assert (f"/labeling/analytics/?album={album.pk}" in links) == (who == "owner")
    for link in links:
        assert client.get(link).status_code in (200, 302), (who, link)
    # Caption history links for exactly the images whose captions this person may edit.
    histories = {int(pk) for pk in re.findall(r'href="/labeling/images/(\d+)/captions/history/"', html)}
    expected = {roles_album["own"].pk, roles_album["contributed"].pk} if who == "editor" else {roles_album["own"].pk}
    assert histories == expected


def test_the_labeling_page_lists_the_albums_an_editor_may_caption(roles_album):
    album = roles_album["album"]
    tools = reverse("labeling:caption_tools", args=[album.pk])
    for who in ("editor", "owner", "viewer", "contributor"):
        html = roles_album["clients"][who].get(reverse("labeling:index")).content.decode()
        assert (f'href="{tools}"' in html) == (who in OPENS), who
