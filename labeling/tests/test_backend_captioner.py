"""The `captioner` backend on a tiny BLIP built from its config (see labeling/testing/tiny_labelers.py)."""

import pytest
from PIL import Image

from imagineer.jobs import job_cancel
from imagineer.models import JobStatus
from labeling.backends import BackendUnavailable, ImageInput, LabelError, get_backend
from labeling.backends.captioner import check_caption
from labeling.backends.schema import AnswerError
from labeling.models import Label, LabelKind
from labeling.selectors import training_captions
from labeling.services import labeling_job_start, labels_review
from labeling.testing.tiny_labelers import build_tiny_captioner

pytestmark = pytest.mark.usefixtures("media_root")


@pytest.fixture(autouse=True)
def captioner_settings(settings, tiny_captioner_dir):
    settings.LABEL_CAPTIONER_DIR = tiny_captioner_dir
    settings.LABEL_CAPTIONER_PROMPT = ""
    settings.LABEL_CAPTIONER_MAX_TOKENS = 4
    return settings


def test_a_captioner_job_captions_an_album_through_the_queue_idempotently(user, colour_album, run_worker):
    album, red, blue = colour_album
    job = labeling_job_start(user=user, backend="captioner", album=album)
    run_worker("label")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.counters == {"total": 2, "labelled": 2, "skipped": 0, "failed": 0}
    captions = Label.objects.filter(kind=LabelKind.CAPTION)
    # The favoured word, once per generated token: proof the model ran, decoded and was stored.
    assert sorted(captions.values_list("image_id", "value", "source", "review_state")) == sorted([
        (red.pk, "cat cat cat cat", "captioner", "pending"), (blue.pk, "cat cat cat cat", "captioner", "pending")])
    assert captions.first().model_version.startswith("blip@")
    assert Label.objects.exclude(kind=LabelKind.CAPTION).count() == 0  # no tags or NSFW invented

    before = list(Label.objects.order_by("pk").values_list("pk", flat=True))
    again = labeling_job_start(user=user, backend="captioner", album=album)
    run_worker("label")
    again.refresh_from_db()
    assert again.counters["skipped"] == 2
    assert list(Label.objects.order_by("pk").values_list("pk", flat=True)) == before

    forced = labeling_job_start(user=user, backend="captioner", album=album, force=True)
    run_worker("label")
    forced.refresh_from_db()
    assert forced.counters["labelled"] == 2 and Label.objects.count() == 2
    assert not Label.objects.filter(pk__in=before).exists()  # replaced, not duplicated

    labels_review(user=user, ids=Label.objects.filter(image=red).values_list("pk", flat=True), approve=True)
    assert training_captions([red.pk, blue.pk], fallback="Colours") == {red.pk: "cat cat cat cat",
                                                                        blue.pk: "Colours"}


def test_a_model_that_writes_nothing_fails_each_image_as_an_invalid_answer(user, colour_album, run_worker,
                                                                          captioner_settings, tmp_path):
    album, _, _ = colour_album
    captioner_settings.LABEL_CAPTIONER_DIR = build_tiny_captioner(tmp_path / "mute", favour="[SEP]")
    job = labeling_job_start(user=user, backend="captioner", album=album)
    run_worker("label")
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert "caption is empty" in job.error
    assert job.counters["failed"] == 2 and Label.objects.count() == 0


def test_captions_are_validated_like_every_model_answer():
    assert check_caption("  a  red\nsky ") == "a red sky"
    with pytest.raises(AnswerError, match="control characters"):
        check_caption("bad\x07bell")
    with pytest.raises(AnswerError, match="limit is 500"):
        check_caption("word " * 200)


def test_cancel_stops_between_images(tmp_path, tiny_captioner_dir):
    inputs = []
    for n in (1, 2):
        path = tmp_path / f"{n}.png"
        Image.new("RGB", (20, 20), (n * 100, 0, 0)).save(path)
        inputs.append(ImageInput(id=n, path=path, mime="image/png", width=20, height=20))
    flags = iter([False, True])
    outcomes = get_backend("captioner", model_dir=tiny_captioner_dir, max_new_tokens=2).label_batch(
        inputs, should_stop=lambda: next(flags))
    assert outcomes[1].caption == "cat cat"
    assert isinstance(outcomes[2], LabelError) and outcomes[2].code == "cancelled"


def test_a_job_cancelled_before_it_runs_writes_nothing(user, colour_album, run_worker):
    album, _, _ = colour_album
    job = labeling_job_start(user=user, backend="captioner", album=album)
    job_cancel(job)
    run_worker("label")
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and Label.objects.count() == 0


def test_a_missing_or_broken_model_says_what_to_do(tmp_path):
    with pytest.raises(BackendUnavailable, match="config.json does not exist.*fetch_label_models"):
        get_backend("captioner", model_dir=tmp_path / "none").check()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "blip"}')
    with pytest.raises(BackendUnavailable, match="cannot be loaded"):
        get_backend("captioner", model_dir=broken).check()
