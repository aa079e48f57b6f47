"""Caption tools on an album: each changes exactly what it says, and a run's snapshot keeps the old captions."""

import pytest
from django.urls import reverse

from gallery import services as gallery_services
from imagineer.testing import image_bytes
from labeling import captions
from labeling.models import CaptionRevision, Label, LabelKind, ReviewState
from labeling.selectors import album_training_captions, tag_counts
from labeling.services import LabelInputError, caption_set, dataset_export, tag_add

pytestmark = pytest.mark.usefixtures("media_root")


@pytest.fixture
def setup(user, other_user, ingest):
    """alice's album of two images (captioned, tagged), one image of hers outside it with the same caption,
    and bob's public image that she added to the album."""
    album = gallery_services.album_create(owner=user, name="Cats")
    one = ingest(user, image_bytes("PNG", seed=1), filename="1.png")
    two = ingest(user, image_bytes("PNG", seed=2), filename="2.png")
    outside = ingest(user, image_bytes("PNG", seed=3), filename="3.png")
    bobs = ingest(other_user, image_bytes("PNG", seed=4), filename="4.png")
    bobs.is_public = True
    bobs.save()
    gallery_services.album_add_images(album=album, images=[one, two, bobs])
    for image in (one, outside, bobs):
        caption_set(image=image, user=image.owner, text="a grey cat on a sofa")
    tag_add(image=one, user=user, value="cat")
    tag_add(image=one, user=user, value="sofa")
    Label.objects.create(image=two, kind=LabelKind.TAG, value="kitty", source="tagger",
                         review_state=ReviewState.PENDING)
    tag_add(image=two, user=user, value="cat")
    tag_add(image=outside, user=user, value="kitty")
    tag_add(image=bobs, user=other_user, value="kitty")
    return album, one, two, outside, bobs


def _caption(image):
    return Label.objects.get(image=image, kind=LabelKind.CAPTION).value


def _tags(image):
    return sorted(Label.objects.filter(image=image, kind=LabelKind.TAG).values_list("value", flat=True))


def test_the_trigger_word_leads_training_and_export_captions_once(user, setup, tmp_path):
    album, one, two, *_ = setup
    captions.album_trigger_word_set(album=album, user=user, word="  zxc  cat ")
    album.refresh_from_db()
    assert album.trigger_word == "zxc cat"
    texts = album_training_captions(album, [one.pk, two.pk])
    assert texts == {one.pk: "zxc cat, a grey cat on a sofa", two.pk: "zxc cat, kitty, cat"}
    caption_set(image=one, user=user, text="zxc cat, already there")
    assert album_training_captions(album, [one.pk])[one.pk] == "zxc cat, already there"
    dataset_export(album=album, user=user, fmt="kohya", out_dir=tmp_path / "out")
    written = sorted(p.read_text().strip() for p in (tmp_path / "out").rglob("*.txt"))
    assert written == ["zxc cat, a grey cat on a sofa", "zxc cat, already there", "zxc cat, kitty, cat"]
    with pytest.raises(LabelInputError, match="without commas"):
        captions.album_trigger_word_set(album=album, user=user, word="a, b")


def test_find_and_replace_changes_only_this_albums_captions(user, setup):
    album, one, two, outside, bobs = setup
    count = captions.captions_find_replace(album=album, user=user, find="grey", replace="black")
    assert count == 1
    assert _caption(one) == "a black cat on a sofa"
    assert _caption(outside) == "a grey cat on a sofa"  # not in the album
    assert _caption(bobs) == "a grey cat on a sofa"  # in the album, but bob's
    assert _tags(one) == ["cat", "sofa"]
    revision = CaptionRevision.objects.get(tool="replace")
    assert (revision.image_id, revision.old_text, revision.new_text, revision.user) == (
        one.pk, "a grey cat on a sofa", "a black cat on a sofa", user)
    assert captions.captions_find_replace(album=album, user=user, find=r"(\w+) cat", replace=r"cat \1",
                                          regex=True) == 1
    assert _caption(one) == "a cat black on a sofa"


def test_find_and_replace_refuses_bad_input_and_changes_nothing(user, setup):
    album, one, *_ = setup
    with pytest.raises(LabelInputError, match="not a valid regular expression"):
        captions.captions_find_replace(album=album, user=user, find="(", replace="", regex=True)
    with pytest.raises(LabelInputError, match="caption empty"):
        captions.captions_find_replace(album=album, user=user, find=".*", replace="", regex=True)
    assert _caption(one) == "a grey cat on a sofa"
    assert not CaptionRevision.objects.filter(tool="replace").exists()


def test_bulk_tags_touch_exactly_the_albums_own_images(user, setup):
    album, one, two, outside, bobs = setup
    assert captions.album_tag_add(album=album, user=user, tag="Pet") == 2
    assert captions.album_tag_add(album=album, user=user, tag="pet") == 0  # already there
    assert "pet" in _tags(one) and "pet" in _tags(two)
    assert "pet" not in _tags(outside) and "pet" not in _tags(bobs)
    assert captions.album_tag_remove(album=album, user=user, tag="kitty") == 1  # the tagger's, on `two`
    assert "kitty" not in _tags(two) and _tags(outside) == ["kitty"] and _tags(bobs) == ["kitty"]


def test_rename_and_merge_tags_in_the_frequency_table(user, setup):
    album, one, two, outside, _ = setup
    images = album.images_visible_to(user).order_by()
    assert dict(tag_counts(images)) == {"cat": 2, "kitty": 2, "sofa": 1}  # bob's kitty counts, outside's not
    # Merge: `two` has "cat" (manual) and "kitty" (tagger): it keeps one "feline", the manual one.
    assert captions.album_tags_rename(album=album, user=user, tags=["cat", "kitty"], to="Feline") == 3
    assert _tags(one) == ["feline", "sofa"] and _tags(two) == ["feline"]
    assert Label.objects.get(image=two, kind=LabelKind.TAG).source == "manual"
    assert _tags(outside) == ["kitty"]
    assert dict(tag_counts(images)) == {"feline": 2, "kitty": 1, "sofa": 1}  # bob's kitty is not alice's to rename
    with pytest.raises(LabelInputError, match="other than the new name"):
        captions.album_tags_rename(album=album, user=user, tags=["feline"], to="feline")


def test_a_caption_template_combines_trigger_tags_and_caption(user, setup):
    album, one, two, *_ = setup
    captions.album_trigger_word_set(album=album, user=user, word="zxc")
    captions.album_template_set(album=album, user=user, template="{tags}, {caption}")
    assert album_training_captions(album, [one.pk, two.pk]) == {
        one.pk: "zxc, cat, sofa, a grey cat on a sofa", two.pk: "zxc, kitty, cat"}
    captions.album_template_set(album=album, user=user, template="photo of {trigger}: {caption}")
    assert album_training_captions(album, [one.pk])[one.pk] == "photo of zxc: a grey cat on a sofa"
    for bad, message in (("{caption.__class__}", "Unknown placeholder"), ("{trigger}", "needs {tags} or"),
                         ("{caption", "malformed"), ("{caption!r}", "Unknown placeholder")):
        with pytest.raises(LabelInputError, match=message):
            captions.album_template_set(album=album, user=user, template=bad)
    assert Label.objects.filter(image=one, kind=LabelKind.CAPTION).count() == 1  # templates write no labels
    captions.album_template_set(album=album, user=user, template="")
    assert album_training_captions(album, [one.pk])[one.pk] == "zxc, a grey cat on a sofa"


def test_the_caption_tools_page_and_forms(user, setup, user_client, other_client):
    album, one, two, *_ = setup
    url = reverse("labeling:caption_tools", args=[album.pk])
    assert other_client.get(url).status_code == 404
    assert other_client.post(reverse("labeling:find_replace", args=[album.pk]),
                             {"find": "grey", "replace": "x"}).status_code == 404
    assert _caption(one) == "a grey cat on a sofa"
    page = user_client.get(url)
    assert page.status_code == 200 and "kitty" in page.content.decode()
    response = user_client.post(reverse("labeling:trigger_word_set", args=[album.pk]), {"trigger_word": "zxc"},
                                follow=True)
    assert "Trigger word set to" in response.content.decode()
    response = user_client.post(reverse("labeling:template_set", args=[album.pk]), {"template": "{nope}"},
                                follow=True)
    assert "Unknown placeholder" in response.content.decode()
    user_client.post(reverse("labeling:find_replace", args=[album.pk]), {"find": "sofa", "replace": "rug"})
    assert _caption(one) == "a grey cat on a rug"
    user_client.post(reverse("labeling:bulk_tag", args=[album.pk]), {"tag": "indoor", "action": "add"})
    assert "indoor" in _tags(two)
    user_client.post(reverse("labeling:rename_tags", args=[album.pk]), {"tags": ["indoor", "sofa"], "to": "home"})
    assert _tags(one) == ["cat", "home"]
    page = user_client.get(url).content.decode()
    assert "zxc, a grey cat on a rug" in page  # the preview shows the training caption


def test_the_labeler_settings_and_caption_revisions_are_in_the_admin(client, staff_user):
    client.force_login(staff_user)
    assert client.get(reverse("admin:labeling_labelersettings_add")).status_code == 200
    response = client.post(reverse("admin:labeling_labelersettings_add"), {
        "tagger_dir": "labelers/custom", "general_threshold": "0.5", "character_threshold": "", "blacklist": "x",
        "captioner_dir": "", "captioner_prompt": "<MORE_DETAILED_CAPTION>"})
    assert response.status_code == 302
    from django.conf import settings as django_settings

    from labeling.models import LabelerSettings

    row = LabelerSettings.current()
    assert row.pk == 1
    assert row.backend_options("tagger") == {
        "model_dir": django_settings.MODELS_DIR / "labelers/custom", "general_threshold": 0.5,
        "blacklist": f"{django_settings.LABEL_TAGGER_BLACKLIST},x"}
    assert row.backend_options("captioner") == {"prompt": "<MORE_DETAILED_CAPTION>"}
    assert client.get(reverse("admin:labeling_labelersettings_add")).status_code == 403  # one row only
    assert client.get(reverse("admin:labeling_captionrevision_changelist")).status_code == 200


def test_a_forced_rerun_that_replaces_a_machine_caption_is_in_the_caption_history(user, ingest):
    from labeling.backends.base import LabelResult
    from labeling.services import labels_store_result

    image = ingest(user, image_bytes("PNG", seed=9), filename="9.png")

    def result(caption):
        return LabelResult(caption=caption, tags=["cat"], categories=[], nsfw=None, nsfw_confidence=None,
                           model="captioner", version="1")

    labels_store_result(image=image, result=result("a cat"), source="captioner")
    assert labels_store_result(image=image, result=result("a cat again"), source="captioner") == 0  # idempotent
    labels_store_result(image=image, result=result("a striped cat"), source="captioner", replace=True)
    labels_store_result(image=image, result=result("a striped cat"), source="captioner", replace=True)

    revisions = list(CaptionRevision.objects.filter(image=image).values_list("old_text", "new_text", "tool"))
    assert revisions == [("a cat", "a striped cat", "re-run (captioner)")]  # the unchanged re-run adds nothing
    assert Label.objects.get(image=image, kind=LabelKind.CAPTION).value == "a striped cat"
