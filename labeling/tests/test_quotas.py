"""The per-user limit on labeling jobs queued or running at once: service, page and command."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from imagineer.models import JobStatus, UserLimits
from imagineer.quotas import QuotaExceeded
from labeling import services
from labeling.models import LabelingJob

pytestmark = pytest.mark.usefixtures("media_root")


def test_a_user_at_the_limit_cannot_start_another_job(user, other_user, ingest, settings, redis_conn):
    settings.MAX_ACTIVE_LABELING_PER_USER = 2
    image = ingest(user)
    first = services.labeling_job_start(user=user, backend="local", image_ids=[image.pk])
    services.labeling_job_start(user=user, backend="local", image_ids=[image.pk])

    with pytest.raises(QuotaExceeded, match=r"already have 2 labeling jobs waiting or running \(the limit is 2\)"):
        services.labeling_job_start(user=user, backend="local", image_ids=[image.pk])
    assert LabelingJob.objects.count() == 2

    services.labeling_job_start(user=other_user, backend="local", image_ids=[ingest(other_user, seed=2).pk])
    LabelingJob.objects.filter(pk=first.pk).update(status=JobStatus.FAILED)
    services.labeling_job_start(user=user, backend="local", image_ids=[image.pk])  # finished jobs do not count


def test_an_override_raises_one_users_limit(user, ingest, settings, redis_conn):
    settings.MAX_ACTIVE_LABELING_PER_USER = 1
    UserLimits.objects.create(user=user, max_active_labeling=2)
    image = ingest(user)
    for _ in range(2):
        services.labeling_job_start(user=user, backend="local", image_ids=[image.pk])
    with pytest.raises(QuotaExceeded, match="the limit is 2"):
        services.labeling_job_start(user=user, backend="local", image_ids=[image.pk])


def test_the_page_explains_the_limit_and_starts_nothing(user_client, user, ingest, settings, redis_conn):
    settings.MAX_ACTIVE_LABELING_PER_USER = 1
    image = ingest(user)
    services.labeling_job_start(user=user, backend="local", image_ids=[image.pk])
    response = user_client.post("/labeling/start/", {"ids": str(image.pk), "backend": "local"}, follow=True)

    assert response.status_code == 200
    assert "You already have 1 labeling job waiting or running (the limit is 1)" in response.content.decode()
    assert LabelingJob.objects.count() == 1


def test_the_command_prints_the_limit(user, ingest, settings, redis_conn):
    settings.MAX_ACTIVE_LABELING_PER_USER = 1
    image = ingest(user)
    services.labeling_job_start(user=user, backend="local", image_ids=[image.pk])
    with pytest.raises(CommandError, match="the limit is 1"):
        call_command("label_images", "--image", str(image.pk), "--backend", "local")
    assert LabelingJob.objects.count() == 1
