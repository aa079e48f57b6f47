"""The `tagger` backend on a tiny WD14-shaped ONNX graph (see labeling/testing/tiny_labelers.py)."""

import pytest
from PIL import Image

from imagineer.jobs import job_cancel
from imagineer.models import JobStatus
from labeling.backends import BackendUnavailable, ImageInput, LabelError, get_backend
from labeling.backends.tagger import parse_blacklist, preprocess, rating_verdict, tag_text
from labeling.models import Label, LabelerSettings, LabelKind
from labeling.services import labeling_job_start
from labeling.testing.tiny_labelers import build_tiny_tagger

pytestmark = pytest.mark.usefixtures("media_root")


@pytest.fixture(autouse=True)
def tagger_settings(settings, tiny_tagger_dir):
    settings.LABEL_TAGGER_DIR = tiny_tagger_dir
    settings.LABEL_TAGGER_GENERAL_THRESHOLD = 0.35
    settings.LABEL_TAGGER_CHARACTER_THRESHOLD = 0.85
    settings.LABEL_TAGGER_BLACKLIST = ""
    return settings


def test_preprocessing_pads_to_a_white_square_in_bgr_then_resizes():
    picture = Image.new("RGB", (4, 2), (255, 0, 0))
    array = preprocess(picture, 4)
    assert array.shape == (4, 4, 3) and str(array.dtype) == "float32"
    assert array[0, 0].tolist() == [255, 255, 255] and array[3, 3].tolist() == [255, 255, 255]  # padding rows
    assert array[1, 0].tolist() == [0, 0, 255] and array[2, 3].tolist() == [0, 0, 255]  # red, as B, G, R
    assert preprocess(Image.new("RGB", (900, 300), (0, 0, 255)), 448).shape == (448, 448, 3)


def test_tag_names_get_spaces_but_emoticons_keep_their_underscores():
    assert tag_text("long_hair") == "long hair"
    assert tag_text("^_^") == "^_^" and tag_text("o_o") == "o_o"
    assert parse_blacklist("Blue Sky, red_theme") >= {"blue sky", "blue_sky", "red theme", "red_theme"}


def test_ratings_become_the_nsfw_verdict():
    assert rating_verdict({"general": 0.1, "sensitive": 0.1, "questionable": 0.2, "explicit": 0.6}) == (True, 0.8)
    assert rating_verdict({"general": 0.9, "sensitive": 0.05, "questionable": 0.05, "explicit": 0.0}) == (
        False, 0.95)
    assert rating_verdict({}) == (None, None)


def test_a_tagger_job_tags_an_album_through_the_queue_and_a_rerun_changes_nothing(user, colour_album, run_worker):
    album, red, blue = colour_album
    job = labeling_job_start(user=user, backend="tagger", album=album)
    run_worker("label")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.counters == {"total": 2, "labelled": 2, "skipped": 0, "failed": 0}
    red_tags = dict(Label.objects.filter(image=red, kind=LabelKind.TAG).values_list("value", "confidence"))
    # 0.82 clears the general threshold (0.35) but not the character one (0.85): no "hatsune miku".
    assert red_tags == {"red theme": pytest.approx(0.9934, abs=1e-3), "long hair": pytest.approx(0.8182, abs=1e-3)}
    assert set(Label.objects.filter(image=blue, kind=LabelKind.TAG).values_list("value", flat=True)) == {"blue sky"}
    assert Label.objects.get(image=red, kind=LabelKind.NSFW).value == "nsfw"
    assert Label.objects.get(image=blue, kind=LabelKind.NSFW).value == "safe"
    red.refresh_from_db()
    blue.refresh_from_db()
    assert red.is_nsfw and not blue.is_nsfw
    assert set(Label.objects.values_list("source", "review_state", "model").distinct()) == {
        ("tagger", "pending", f"wd-tagger:{job_model_dir_name()}")}
    assert not Label.objects.filter(kind=LabelKind.CAPTION).exists()

    before = list(Label.objects.order_by("pk").values_list("pk", "value"))
    again = labeling_job_start(user=user, backend="tagger", album=album)
    run_worker("label")
    again.refresh_from_db()
    assert again.counters["skipped"] == 2 and again.counters["labelled"] == 0
    assert list(Label.objects.order_by("pk").values_list("pk", "value")) == before


def job_model_dir_name():
    from django.conf import settings

    return settings.LABEL_TAGGER_DIR.name


def test_thresholds_and_blacklist_from_the_admin_settings_apply(user, colour_album, run_worker):
    album, red, _ = colour_album
    LabelerSettings.objects.create(pk=1, general_threshold=0.9, character_threshold=0.8, blacklist="red_theme")
    job = labeling_job_start(user=user, backend="tagger", album=album)
    run_worker("label")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    # Characters come first; "long hair" (0.82) is under 0.9 now; "red theme" is blacklisted.
    assert list(Label.objects.filter(image=red, kind=LabelKind.TAG).order_by("pk").values_list("value", flat=True)
                ) == ["hatsune miku"]


def test_the_admin_model_folder_wins_over_the_setting(user, colour_album, run_worker, tagger_settings, tmp_path):
    album, _, _ = colour_album
    tagger_settings.LABEL_TAGGER_DIR = tmp_path / "nowhere"
    LabelerSettings.objects.create(pk=1, tagger_dir=str(build_tiny_tagger(tmp_path / "admin-tagger")))
    job = labeling_job_start(user=user, backend="tagger", album=album)
    run_worker("label")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert set(Label.objects.values_list("model", flat=True)) == {"wd-tagger:admin-tagger"}


def test_a_missing_model_fails_the_job_with_where_to_get_it(user, colour_album, run_worker, tagger_settings,
                                                           tmp_path):
    album, _, _ = colour_album
    tagger_settings.LABEL_TAGGER_DIR = tmp_path / "empty"
    job = labeling_job_start(user=user, backend="tagger", album=album)
    run_worker("label")
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert "model.onnx does not exist" in job.error and "fetch_label_models" in job.error
    assert Label.objects.count() == 0


def test_a_tag_list_that_does_not_match_the_model_is_refused(tmp_path):
    folder = build_tiny_tagger(tmp_path / "mismatch", extra_outputs=2)
    with pytest.raises(BackendUnavailable, match="do not belong together"):
        get_backend("tagger", model_dir=folder).check()
    (folder / "selected_tags.csv").write_text("tag_id,label\n1,x\n")
    with pytest.raises(BackendUnavailable, match="no category, name column"):
        get_backend("tagger", model_dir=folder).check()


def _inputs(tmp_path, colours):
    inputs = []
    for n, colour in enumerate(colours, start=1):
        path = tmp_path / f"{n}.png"
        Image.new("RGB", (40, 30), colour).save(path)
        inputs.append(ImageInput(id=n, path=path, mime="image/png", width=40, height=30))
    return inputs


def test_cancelling_stops_between_images_and_leaves_the_rest_unlabelled(tmp_path, tiny_tagger_dir):
    inputs = _inputs(tmp_path, [(255, 0, 0), (0, 0, 255), (255, 255, 255)])
    calls = {"n": 0}

    def stop_after_first():
        calls["n"] += 1
        return calls["n"] > 1

    outcomes = get_backend("tagger", model_dir=tiny_tagger_dir).label_batch(inputs, should_stop=stop_after_first)
    assert set(outcomes) == {1, 2, 3}
    assert outcomes[1].tags[0] == "red theme"
    assert all(isinstance(outcomes[i], LabelError) and outcomes[i].code == "cancelled" for i in (2, 3))


def test_a_cancelled_job_writes_nothing_and_a_broken_file_fails_only_itself(user, colour_album, run_worker,
                                                                           media_root):
    album, red, blue = colour_album
    job = labeling_job_start(user=user, backend="tagger", album=album)
    job_cancel(job)
    run_worker("label")
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and Label.objects.count() == 0

    (media_root / red.file.name).write_bytes(b"not a picture")
    job = labeling_job_start(user=user, backend="tagger", album=album)
    run_worker("label")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert job.counters["labelled"] == 1 and job.counters["failed"] == 1
    assert job.image_errors[0]["image_id"] == red.pk
    assert not Label.objects.filter(image=red).exists() and Label.objects.filter(image=blue).exists()
