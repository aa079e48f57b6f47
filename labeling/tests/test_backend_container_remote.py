"""claude-docker against an engine that cannot see this machine's files, as with a remote DOCKER_HOST.

The engine is a second private podman service in its own mount namespace, with an empty tmpfs over
this test's temp dir (where the images, the credentials and the backend's work dir are): anything the
backend tried to bind-mount would arrive empty. Images and credentials must go through the API.
"""

from __future__ import annotations

import os

import pytest

from labeling.backends import LabelResult, get_backend

pytestmark = pytest.mark.containers


@pytest.fixture
def blind_engine(tmp_path):
    from labeling.testing.image import import_test_image
    from labeling.testing.podman import podman_problem, start_podman_service

    problem = podman_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so the container tests must run, but {problem}", pytrace=False)
        pytest.skip(f"container tests skipped: {problem}")
    service = start_podman_service(hidden=[tmp_path])
    client = service.client()
    try:
        yield client, import_test_image(client)
    finally:
        client.close()
        service.stop()


def test_it_labels_through_an_engine_that_cannot_see_this_machines_files(
        blind_engine, make_image, claude_credentials, tmp_path):
    client, labeler_image = blind_engine
    images = [make_image(ext="png"), make_image(ext="webp")]
    # The engine really is blind to this folder: a bind mount of it shows an empty directory.
    seen = client.containers.run(
        labeler_image.id, entrypoint=["ls", "-A", "/probe"], user="0:0", network_mode="none", remove=True,
        volumes={str(tmp_path): {"bind": "/probe", "mode": "ro"}},
    )
    assert seen.strip() == b"" and any(tmp_path.iterdir())

    work_dir = tmp_path / "batches"
    work_dir.mkdir()
    backend = get_backend(
        "claude-docker", client=client, image=labeler_image.tags[0], credentials_dir=claude_credentials,
        api_key="", network_mode="none", timeout=30, memory="256m", cpus=0.5, pids=64, work_dir=work_dir,
    )
    backend.check()
    outcomes = backend.label_batch(images, should_stop=lambda: False)

    for image in images:
        result = outcomes[image.id]
        assert isinstance(result, LabelResult), result
        assert result.caption == f"Stand-in caption for {image.key} (2 files)."
        assert {"auth-file", "images-ro", "uid-1000", "caps-none"} <= set(result.tags)
    assert client.containers.list(all=True) == [] and client.volumes.list() == []
    assert list(work_dir.iterdir()) == []
