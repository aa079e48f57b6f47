import pytest

from gallery.models import Image
from labeling import services
from labeling.backends import LabelResult
from labeling.models import Label, LabelKind, LabelSource, ReviewState
from labeling.selectors import training_captions

pytestmark = pytest.mark.usefixtures("media_root")


def _result(**kw):
    base = {"caption": "a red fox", "tags": ["Fox", "animal", "fox"], "categories": ["wildlife"], "nsfw": False,
            "nsfw_confidence": 0.98, "model": "claude-x", "version": "1"}
    return LabelResult(**{**base, **kw})


def test_a_result_is_stored_as_pending_machine_labels(user, ingest):
    image = ingest(user)
    written = services.labels_store_result(image=image, result=_result(), source=LabelSource.CLAUDE)
    labels = Label.objects.filter(image=image)
    assert written == labels.count() == 5  # caption, 2 tags (deduplicated, lower-cased), category, nsfw
    assert set(labels.filter(kind=LabelKind.TAG).values_list("value", flat=True)) == {"fox", "animal"}
    assert all(lbl.review_state == ReviewState.PENDING and lbl.model == "claude-x" for lbl in labels)
    nsfw = labels.get(kind=LabelKind.NSFW)
    assert (nsfw.value, nsfw.confidence) == ("safe", 0.98)


def test_storing_twice_changes_nothing_unless_replacing(user, ingest):
    image = ingest(user)
    services.labels_store_result(image=image, result=_result(), source=LabelSource.CLAUDE)
    first = set(Label.objects.values_list("pk", flat=True))
    assert services.labels_store_result(image=image, result=_result(caption="other"), source=LabelSource.CLAUDE) == 0
    assert set(Label.objects.values_list("pk", flat=True)) == first
    services.labels_store_result(image=image, result=_result(caption="other"), source=LabelSource.CLAUDE,
                                 replace=True)
    assert Label.objects.get(kind=LabelKind.CAPTION).value == "other"


def test_a_confident_nsfw_verdict_flags_the_image(user, ingest):
    image = ingest(user, is_public=True)
    services.labels_store_result(image=image, result=_result(nsfw=True, nsfw_confidence=0.9), source="local")
    image.refresh_from_db()
    assert image.is_nsfw


def test_training_caption_prefers_manual_then_approved_machine_then_tags(user, ingest):
    image = ingest(user)
    assert training_captions([image.pk], fallback="My album") == {image.pk: "My album"}
    services.labels_store_result(image=image, result=_result(), source=LabelSource.CLAUDE)
    assert training_captions([image.pk])[image.pk] == "fox, animal"  # caption still pending review
    caption = Label.objects.get(kind=LabelKind.CAPTION)
    services.labels_review(user=user, ids=[caption.pk], approve=True)
    assert training_captions([image.pk])[image.pk] == "a red fox"
    assert training_captions([image.pk], append_tags=True)[image.pk] == "a red fox, fox, animal"
    services.caption_set(image=image, user=user, text="my own words")
    assert training_captions([image.pk])[image.pk] == "my own words"
    services.caption_set(image=image, user=user, text="")
    assert training_captions([image.pk])[image.pk] == "a red fox"


def test_rejected_labels_do_not_count(user, ingest):
    image = ingest(user)
    services.labels_store_result(image=image, result=_result(caption=None, tags=["cat"]), source="claude")
    tag = Label.objects.get(kind=LabelKind.TAG)
    services.labels_review(user=user, ids=[tag.pk], approve=False)
    assert training_captions([image.pk], fallback="fallback")[image.pk] == "fallback"
    assert not Image.objects.with_tag("cat").exists()


def test_review_only_touches_machine_labels_on_the_users_images(user, other_user, ingest):
    mine, theirs = ingest(user, seed=1), ingest(other_user, seed=2)
    for image in (mine, theirs):
        services.labels_store_result(image=image, result=_result(), source="claude")
    manual = services.tag_add(image=mine, user=user, value="keep")
    ids = list(Label.objects.values_list("pk", flat=True))
    assert services.labels_review(user=user, ids=ids, approve=False) == 5
    assert Label.objects.filter(image=theirs, review_state=ReviewState.PENDING).count() == 5
    manual.refresh_from_db()
    assert manual.review_state == ReviewState.APPROVED


def test_manual_tags_are_normalised_and_unique(user, ingest):
    image = ingest(user)
    a = services.tag_add(image=image, user=user, value="  Golden   Hour! ")
    b = services.tag_add(image=image, user=user, value="golden hour")
    assert a.pk == b.pk and a.value == "golden hour" and a.source == LabelSource.MANUAL
    with pytest.raises(services.LabelInputError):
        services.tag_add(image=image, user=user, value="!!!")
    with pytest.raises(services.LabelInputError):
        services.tag_add(image=image, user=user, value="x" * 65)


def test_editing_a_machine_label_makes_it_manual(user, ingest):
    image = ingest(user)
    services.labels_store_result(image=image, result=_result(), source="claude")
    caption = Label.objects.get(kind=LabelKind.CAPTION)
    services.label_update(label=caption, user=user, value="a fox in snow")
    caption.refresh_from_db()
    assert (caption.value, caption.source, caption.review_state) == ("a fox in snow", "manual", "approved")


def test_gallery_search_and_tag_filter_use_labels(user, ingest):
    a, b = ingest(user, seed=1), ingest(user, seed=2)
    services.tag_add(image=a, user=user, value="sunset")
    services.labels_store_result(image=b, result=_result(caption="a lighthouse at night", tags=[]), source="claude")
    assert list(Image.objects.search("sunset")) == [a]
    assert list(Image.objects.search("lighthouse")) == [b]
    assert list(Image.objects.with_tag("Sunset")) == [a]


def test_scraped_alt_and_title_become_scraper_captions(user, ingest):
    image = ingest(user)
    services.label_add_scraped(image=image, alt="A fox", title="Fox photo")
    services.label_add_scraped(image=image, alt="A fox", title="A fox")
    values = sorted(Label.objects.filter(source="scraper").values_list("value", flat=True))
    assert values == ["A fox", "Fox photo"]
