"""A labeling job with the claude-docker backend, through the real queue and a real container engine."""

import pytest

from gallery import services as gallery_services
from imagineer.models import JobStatus
from imagineer.testing import image_bytes
from labeling.models import Label, LabelKind
from labeling.services import labeling_job_start
from labeling.tests.conftest import labeler_containers

pytestmark = [pytest.mark.usefixtures("media_root"), pytest.mark.containers]


def test_a_container_labeling_job_writes_captions_and_leaves_no_container(
        user, ingest, run_worker, settings, labeler_image, claude_credentials, docker_client):
    settings.LABEL_CONTAINER_IMAGE = labeler_image.tags[0]
    settings.LABEL_CONTAINER_NETWORK = "none"
    settings.LABEL_CLAUDE_CREDENTIALS = str(claude_credentials)
    album = gallery_services.album_create(owner=user, name="Boxed")
    images = [ingest(user, image_bytes("PNG", seed=s), filename=f"{s}.png") for s in range(3)]
    gallery_services.album_add_images(album=album, images=images)
    job = labeling_job_start(user=user, backend="claude-docker", album=album)
    run_worker("label")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.counters["labelled"] == 3
    for image in images:
        caption = Label.objects.get(image=image, kind=LabelKind.CAPTION, source="claude")
        assert caption.value.startswith("Stand-in caption for img-")
        assert caption.review_state == "pending" and caption.model_version.endswith("+prompt-1")
        assert Label.objects.filter(image=image, kind=LabelKind.NSFW, source="claude").exists()
    assert labeler_containers(docker_client) == []
