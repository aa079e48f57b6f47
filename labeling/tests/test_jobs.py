"""Labeling jobs through the real queue with the local backend (NudeNet runs for real)."""

import pytest

from gallery import services as gallery_services
from imagineer.jobs import job_cancel
from imagineer.models import JobStatus
from imagineer.testing import image_bytes
from labeling.models import Label, LabelingJob, LabelKind
from labeling.services import LabelInputError, labeling_job_start

pytestmark = pytest.mark.usefixtures("media_root")


@pytest.fixture
def album_with_images(user, ingest):
    album = gallery_services.album_create(owner=user, name="Set")
    images = [ingest(user, image_bytes("PNG", size=(120 + 40 * s, 90), seed=s), filename=f"{s}.png")
              for s in range(3)]
    gallery_services.album_add_images(album=album, images=images)
    return album, images


def test_a_local_labeling_job_labels_an_album_and_a_rerun_changes_nothing(user, album_with_images, run_worker):
    album, images = album_with_images
    job = labeling_job_start(user=user, backend="local", album=album)
    run_worker("label")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.counters == {"total": 3, "labelled": 3, "skipped": 0, "failed": 0}
    for image in images:
        kinds = set(Label.objects.filter(image=image, source="local").values_list("kind", flat=True))
        assert kinds == {LabelKind.TAG, LabelKind.NSFW}
        assert Label.objects.filter(image=image, value="landscape").exists()
        assert not Label.objects.filter(image=image, kind=LabelKind.CAPTION).exists()  # no invented captions
    before = list(Label.objects.order_by("pk").values_list("pk", "value"))
    again = labeling_job_start(user=user, backend="local", album=album)
    run_worker("label")
    again.refresh_from_db()
    assert again.counters["skipped"] == 3 and again.counters["labelled"] == 0
    assert list(Label.objects.order_by("pk").values_list("pk", "value")) == before
    forced = labeling_job_start(user=user, backend="local", album=album, force=True)
    run_worker("label")
    forced.refresh_from_db()
    assert forced.counters["labelled"] == 3
    assert Label.objects.count() == len(before)


def test_a_broken_file_fails_that_image_only(user, album_with_images, run_worker, media_root):
    album, images = album_with_images
    (media_root / images[1].file.name).write_bytes(b"broken on disk")
    job = labeling_job_start(user=user, backend="local", album=album)
    run_worker("label")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert job.counters["labelled"] == 2 and job.counters["failed"] == 1
    assert job.image_errors[0]["image_id"] == images[1].pk
    assert not Label.objects.filter(image=images[1]).exists()


def test_a_job_cancelled_before_it_runs_writes_nothing(user, album_with_images, run_worker):
    album, _ = album_with_images
    job = labeling_job_start(user=user, backend="local", album=album)
    job_cancel(job)
    run_worker("label")
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and Label.objects.count() == 0


def test_an_unavailable_backend_fails_the_job_with_its_message(user, album_with_images, run_worker, settings):
    settings.ANTHROPIC_API_KEY = ""
    album, _ = album_with_images
    job = labeling_job_start(user=user, backend="anthropic", album=album)
    run_worker("label")
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.error
    assert Label.objects.count() == 0


def test_users_label_only_their_own_images(user, other_user, album_with_images, db):
    album, images = album_with_images
    with pytest.raises(LabelInputError):
        labeling_job_start(user=other_user, backend="local", album=album)
    with pytest.raises(LabelInputError, match="none of the chosen images are yours"):
        labeling_job_start(user=other_user, backend="local", image_ids=[i.pk for i in images])
    assert LabelingJob.objects.count() == 0


def test_staff_may_label_anyones_images(staff_user, album_with_images, redis_conn):
    album, _ = album_with_images
    assert labeling_job_start(user=staff_user, backend="local", album=album).counters["total"] == 3
