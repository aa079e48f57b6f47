"""Labeling's caption tools against training runs: a run's frozen snapshot keeps the captions it was
started with, and the image's caption history (labeling) shows which version each run used (training's hook)."""

import pytest
from django.urls import reverse

from gallery import services as gallery_services
from imagineer.testing import image_bytes
from labeling import captions
from labeling.services import caption_set
from training.models import BaseModel, TrainingRun
from training.runs.services import dataset_snapshot

pytestmark = pytest.mark.usefixtures("media_root")


def _captions(run):
    return {entry["image_id"]: entry["caption"] for entry in run.dataset}


def test_a_runs_snapshot_keeps_the_old_caption_and_the_history_shows_both(user, other_user, ingest, user_client,
                                                                         other_client):
    album = gallery_services.album_create(owner=user, name="Cats")
    image = ingest(user, image_bytes("PNG", seed=1), filename="1.png")
    gallery_services.album_add_images(album=album, images=[image])
    caption_set(image=image, user=user, text="a grey cat on a sofa")
    captions.album_trigger_word_set(album=album, user=user, word="zxc")
    base = BaseModel.objects.create(name="tiny", source="base/none", kind="sd15", source_type="folder")
    run = TrainingRun.objects.create(owner=user, name="first run", base_model=base,
                                     dataset=dataset_snapshot(user=user, albums=[album]))
    assert _captions(run)[image.pk] == "zxc, a grey cat on a sofa"  # the trigger word is frozen in too

    captions.captions_find_replace(album=album, user=user, find="grey", replace="ginger")
    run.refresh_from_db()
    assert _captions(run)[image.pk] == "zxc, a grey cat on a sofa"
    second = TrainingRun.objects.create(owner=user, name="second run", base_model=base,
                                        dataset=dataset_snapshot(user=user, albums=[album]))
    assert _captions(second)[image.pk] == "zxc, a ginger cat on a sofa"

    url = reverse("labeling:caption_history", args=[image.pk])
    html = user_client.get(url).content.decode()
    assert "a ginger cat on a sofa" in html
    assert "first run" in html and "zxc, a grey cat on a sofa" in html
    assert "second run" in html and "zxc, a ginger cat on a sofa" in html
    assert "replace by alice" in html
    first_row = html[html.index("first run"):]
    assert first_row.index("(an earlier version)") < first_row.index("</tr>")
    second_row = html[html.index("second run"):]
    assert second_row.index("(the current version)") < second_row.index("</tr>")
    assert other_client.get(url).status_code == 404


@pytest.mark.parametrize(("tool", "after"), [
    (lambda album, user: captions.album_tag_add(album=album, user=user, tag="sofa"), "tabby, indoors, sofa"),
    (lambda album, user: captions.album_tag_remove(album=album, user=user, tag="indoors"), "tabby"),
    (lambda album, user: captions.album_tags_rename(album=album, user=user, tags=["tabby", "indoors"], to="cat"),
     "cat"),
    (lambda album, user: captions.album_template_set(album=album, user=user, template="photo of {tags}"),
     "photo of tabby, indoors"),
    (lambda album, user: captions.captions_find_replace(album=album, user=user, find="grey", replace="ginger"),
     "a ginger cat"),
])
def test_every_caption_tool_changes_new_snapshots_and_never_a_runs_frozen_one(user, ingest, tool, after):
    from labeling.models import Label, LabelKind, ReviewState

    album = gallery_services.album_create(owner=user, name="Cats")
    tagged, captioned = (ingest(user, image_bytes("PNG", seed=n), filename=f"{n}.png") for n in (1, 2))
    gallery_services.album_add_images(album=album, images=[tagged, captioned])
    for value in ("tabby", "indoors"):
        Label.objects.create(image=tagged, kind=LabelKind.TAG, value=value, source="tagger",
                             review_state=ReviewState.APPROVED)
    caption_set(image=captioned, user=user, text="a grey cat")
    base = BaseModel.objects.create(name="tiny", source="base/none", kind="sd15", source_type="folder")

    def snapshot(name):
        return TrainingRun.objects.create(owner=user, name=name, base_model=base,
                                          dataset=dataset_snapshot(user=user, albums=[album]))

    before = snapshot("before")
    frozen = _captions(before)
    assert frozen == {tagged.pk: "tabby, indoors", captioned.pk: "a grey cat"}

    tool(album, user)

    before.refresh_from_db()
    assert _captions(before) == frozen
    changed = _captions(snapshot("after"))
    target = captioned if after.startswith("a ") else tagged
    assert changed[target.pk] == after and changed != frozen
