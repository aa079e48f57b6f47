"""The reaper's clean-up of labeler containers (labeling.apps.remove_orphan_containers) on a real engine,
and the extra container environment from settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from imagineer.models import JobStatus
from labeling.apps import remove_orphan_containers
from labeling.backends.container import (
    CONTAINER_LABEL,
    CONTAINER_LABEL_VALUE,
    ContainerBackend,
    remove_stale_containers,
)
from labeling.models import LabelingJob

from .conftest import labeler_containers

pytestmark = pytest.mark.containers


@pytest.fixture
def start_container(labeler_image, docker_client):
    """Start a sleeping container labelled like the backend's own (as if its worker had been killed)."""

    def start():
        container = docker_client.containers.create(
            labeler_image.id, command=["sleep", "60"], labels={CONTAINER_LABEL: CONTAINER_LABEL_VALUE},
            network_mode="none",
        )
        container.start()
        return container

    yield start
    for container in labeler_containers(docker_client):
        container.remove(force=True)


def _job(user, *, backend: str = "claude-docker", status: str = JobStatus.RUNNING) -> LabelingJob:
    now = timezone.now()
    return LabelingJob.objects.create(owner=user, backend=backend, status=status, started_at=now, heartbeat_at=now,
                                      image_ids=[1])


def test_it_removes_every_labeler_container_at_once_when_no_container_job_is_running(
        user, start_container, docker_client):
    start_container()
    start_container()
    # Neither a running job of another backend nor a finished container job needs a container.
    _job(user, backend="local")
    _job(user, status=JobStatus.FAILED)

    assert remove_orphan_containers() == 2
    assert labeler_containers(docker_client) == []


def test_it_keeps_young_containers_while_a_container_job_is_running(user, start_container, docker_client):
    job = _job(user)
    container = start_container()

    assert remove_orphan_containers() == 0
    assert [c.id for c in labeler_containers(docker_client)] == [container.id]

    # The reaper fails the stale job first; then nothing can be waiting for the container.
    LabelingJob.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, finished_at=timezone.now())
    assert remove_orphan_containers() == 1
    assert labeler_containers(docker_client) == []


def test_it_spares_containers_created_after_the_moment_it_decided(start_container, docker_client):
    start_container()

    looked_at = datetime.now(UTC) - timedelta(seconds=30)
    assert remove_stale_containers(now=looked_at, client=docker_client) == 0
    assert remove_stale_containers(client=docker_client) == 1


def test_the_container_environment_setting_sits_under_the_explicit_option(settings):
    settings.LABEL_CONTAINER_ENV = {"HTTPS_PROXY": "http://proxy.example:3128", "FAKE_CLAUDE_MODE": "sleep"}

    backend = ContainerBackend(environment={"FAKE_CLAUDE_MODE": "normal"})
    assert backend.environment == {"HTTPS_PROXY": "http://proxy.example:3128", "FAKE_CLAUDE_MODE": "normal"}
    assert ContainerBackend().environment == settings.LABEL_CONTAINER_ENV
