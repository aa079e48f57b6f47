"""claude-docker against a real engine: podman's Docker API running the stand-in labeler image."""

from __future__ import annotations

import time

import pytest

from labeling.backends import (
    ERROR_BACKEND,
    ERROR_CANCELLED,
    ERROR_IMAGE,
    ERROR_INVALID_ANSWER,
    ERROR_TIMEOUT,
    BackendUnavailable,
    LabelError,
    LabelResult,
)
from labeling.backends.container import CONTAINER_LABEL, remove_stale_containers

from .conftest import labeler_containers

pytestmark = pytest.mark.containers


def never() -> bool:
    return False


def test_it_labels_every_image_of_a_batch(container_backend, make_image, docker_client):
    images = [make_image((80, 40), ext="png"), make_image((40, 80), ext="jpg"), make_image((50, 50), ext="webp")]

    outcomes = container_backend().label_batch(images, should_stop=never)

    assert set(outcomes) == {image.id for image in images}
    for image in images:
        result = outcomes[image.id]
        assert isinstance(result, LabelResult), result
        # The stand-in saw exactly this batch's files, under the keys named in the prompt.
        assert result.caption == f"Stand-in caption for {image.key} (3 files)."
        assert result.tags[0] == "stand-in"  # "Stand-In" and "stand-in" became one lowercase tag
        assert result.categories == ["test"]
        assert result.nsfw is False and result.nsfw_confidence == 0.97
        assert result.model == "stand-in-model"
        assert result.version == "claude-code-stand-in+prompt-1"
    assert labeler_containers(docker_client) == []
    assert list(container_backend.work_dir.iterdir()) == []  # the batch's temp dir is gone too


def test_it_runs_the_container_locked_down(container_backend, make_image):
    image = make_image()

    result = container_backend().label_batch([image], should_stop=never)[image.id]

    assert isinstance(result, LabelResult), result
    observed = set(result.tags)
    assert {"images-ro", "rootfs-ro", "home-rw", "caps-none", "no-new-privs", "uid-1000", "net-none"} <= observed
    assert "auth-file" in observed  # credentials mounted read-only, copied into the tmpfs home
    assert {"mem-268435456", "pids-64", "cpu-50000"} <= observed


def test_it_passes_the_api_key_when_there_are_no_credentials(container_backend, make_image, tmp_path):
    image = make_image()
    backend = container_backend(credentials_dir=tmp_path / "no-such-dir", api_key="sk-ant-test")

    result = backend.label_batch([image], should_stop=never)[image.id]

    assert isinstance(result, LabelResult), result
    assert "auth-key" in result.tags


def test_a_timeout_fails_the_whole_batch_and_removes_the_container(container_backend, make_image, docker_client):
    images = [make_image(), make_image()]
    started = time.monotonic()

    outcomes = container_backend("sleep", timeout=1.5).label_batch(images, should_stop=never)

    assert time.monotonic() - started < 10
    assert outcomes == {image.id: LabelError("timed out after 1.5 s", ERROR_TIMEOUT) for image in images}
    assert labeler_containers(docker_client) == []


def test_it_stops_when_the_job_is_cancelled(container_backend, make_image, docker_client):
    images = [make_image(), make_image()]
    started = time.monotonic()

    outcomes = container_backend("sleep", timeout=60).label_batch(
        images, should_stop=lambda: time.monotonic() - started > 0.8
    )

    assert time.monotonic() - started < 10
    assert {outcome.code for outcome in outcomes.values()} == {ERROR_CANCELLED}
    assert labeler_containers(docker_client) == []


def test_malformed_output_fails_every_image_with_nothing_partial(container_backend, make_image, docker_client):
    images = [make_image(), make_image()]

    outcomes = container_backend("malformed").label_batch(images, should_stop=never)

    for image in images:
        assert isinstance(outcomes[image.id], LabelError)
        assert outcomes[image.id].code == ERROR_INVALID_ANSWER
        assert "not valid JSON" in outcomes[image.id].message
    assert labeler_containers(docker_client) == []


def test_one_invalid_entry_fails_only_that_image(container_backend, make_image):
    first, second = make_image(), make_image()

    outcomes = container_backend("invalid-entry").label_batch([first, second], should_stop=never)

    assert outcomes[first.id] == LabelError(
        f'invalid answer for {first.key}: nsfw must be true or false, got a string "maybe"', ERROR_INVALID_ANSWER
    )
    assert isinstance(outcomes[second.id], LabelResult)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("error",
         "the Claude CLI reported an error (error_during_execution): stand-in failure while reading the images"),
        ("crash", "the labeler exited with code 7: stand-in crashed"),
    ],
)
def test_a_failed_run_fails_each_image_with_the_reason(container_backend, make_image, docker_client, mode, message):
    image = make_image()

    outcome = container_backend(mode).label_batch([image], should_stop=never)[image.id]

    assert outcome == LabelError(message, ERROR_BACKEND)
    assert labeler_containers(docker_client) == []


def test_a_refused_login_makes_the_backend_unavailable(container_backend, make_image, docker_client):
    with pytest.raises(BackendUnavailable, match="Claude refused the credentials: Not logged in"):
        container_backend("auth").label_batch([make_image()], should_stop=never)
    assert labeler_containers(docker_client) == []


def test_a_missing_file_fails_only_that_image(container_backend, make_image):
    present, missing = make_image(), make_image()
    missing.path.unlink()

    outcomes = container_backend().label_batch([present, missing], should_stop=never)

    assert isinstance(outcomes[present.id], LabelResult)
    assert outcomes[present.id].caption.endswith("(1 files).")
    assert outcomes[missing.id].code == ERROR_IMAGE


def test_a_missing_image_makes_the_backend_unavailable(container_backend, make_image):
    backend = container_backend(image="localhost/imagineer-no-such-image:latest")

    with pytest.raises(BackendUnavailable, match="not in the container engine. Build it with: docker build"):
        backend.check()
    with pytest.raises(BackendUnavailable):
        backend.label_batch([make_image()], should_stop=never)


def test_check_passes_with_engine_image_and_credentials(container_backend):
    container_backend().check()


def test_stale_containers_are_removed(labeler_image, docker_client):
    container = docker_client.containers.create(
        labeler_image.id, command=["sleep", "60"], labels={CONTAINER_LABEL: "claude-docker"}, network_mode="none"
    )
    container.start()

    assert remove_stale_containers(older_than=3600, client=docker_client) == 0
    assert remove_stale_containers(older_than=0, client=docker_client) == 1
    assert labeler_containers(docker_client) == []


# -- what reaches the engine: everything through its API, nothing of this machine mounted ------------


def run_watching(backend, images, docker_client, work_dir):
    """Label `images` with `backend`, inspecting the labeler container and `work_dir` once while it runs."""
    seen = {}

    def should_stop() -> bool:
        if "container" not in seen:
            running = labeler_containers(docker_client)
            if running:
                seen["container"] = docker_client.api.inspect_container(running[0].id)
                seen["work_dir"] = {path.relative_to(work_dir): path.stat().st_mode & 0o777
                                    for path in work_dir.rglob("*")}
        return False

    outcomes = backend.label_batch(images, should_stop=should_stop)
    assert "container" in seen, "the labeler finished before it could be inspected"
    return outcomes, seen["container"], seen["work_dir"]


def test_images_and_credentials_go_in_through_the_api_with_no_bind_mount(
        container_backend, make_image, docker_client):
    images = [make_image(ext="png"), make_image(ext="jpg")]
    backend = container_backend("slow")

    outcomes, inspected, work_dir = run_watching(backend, images, docker_client, container_backend.work_dir)

    assert all(isinstance(outcomes[image.id], LabelResult) for image in images), outcomes
    assert "auth-file" in outcomes[images[0].id].tags and "images-ro" in outcomes[images[0].id].tags
    mounts = inspected["Mounts"]
    assert {mount["Destination"] for mount in mounts} == {"/images", "/claude-credentials"}
    assert {mount["Type"] for mount in mounts} == {"volume"}
    # podman lists volumes under Binds too, by volume name; a host path would start with "/".
    assert not [bind for bind in inspected["HostConfig"].get("Binds") or [] if bind.startswith("/")]
    assert not [mount for mount in inspected["HostConfig"].get("Mounts") or [] if mount.get("Type") == "bind"]
    # The limits and lock-down stay.
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert inspected["HostConfig"]["Memory"] == 256 * 1024 * 1024 and inspected["HostConfig"]["PidsLimit"] == 64
    # On this machine: one private batch dir (0700) holding the images' archive (0600).
    assert sorted(work_dir.values()) == [0o600, 0o700], work_dir
    assert labeler_containers(docker_client) == []
    assert docker_client.volumes.list() == []  # the container's volumes went with it
    assert list(container_backend.work_dir.iterdir()) == []


def test_the_api_key_reaches_the_cli_but_never_the_container_config(container_backend, make_image, docker_client,
                                                                    tmp_path):
    image = make_image()
    backend = container_backend("slow", credentials_dir=tmp_path / "no-such-dir", api_key="sk-ant-secret-key-42")

    outcomes, inspected, _ = run_watching(backend, [image], docker_client, container_backend.work_dir)

    assert "auth-key" in outcomes[image.id].tags  # the entrypoint exported it to the CLI
    assert "sk-ant-secret-key-42" not in str(inspected)  # no env, label, command or mount shows it
    assert not [name for name in inspected["Config"]["Env"] if name.startswith("ANTHROPIC_API_KEY=")]


def test_the_api_key_is_not_passed_as_environment_even_from_the_env_setting(
        container_backend, make_image, docker_client, tmp_path):
    image = make_image()
    backend = container_backend("slow", credentials_dir=tmp_path / "no-such-dir", api_key="sk-ant-from-option",
                                environment={"ANTHROPIC_API_KEY": "sk-ant-from-env-setting"})

    outcomes, inspected, _ = run_watching(backend, [image], docker_client, container_backend.work_dir)

    assert "auth-key" in outcomes[image.id].tags
    assert "sk-ant-from" not in str(inspected["Config"]["Env"])


def test_the_cli_gets_only_the_read_tool_and_only_for_the_images(container_backend, make_image, docker_client):
    backend = container_backend("slow")

    _, inspected, _ = run_watching(backend, [make_image()], docker_client, container_backend.work_dir)

    command = inspected["Config"]["Cmd"]
    option = {name: command[command.index(name) + 1] for name in
              ("--tools", "--permission-mode", "--allowedTools", "--disallowedTools")}
    assert option["--tools"] == "Read"
    assert option["--permission-mode"] == "dontAsk"  # whatever no allow rule names is refused
    assert option["--allowedTools"] == "Read(//images/**)"
    denied = option["--disallowedTools"].split(",")
    assert {"Bash", "Write", "Edit", "WebFetch", "Glob", "Grep"} <= set(denied)
    assert {"Read(//claude-credentials/**)", "Read(~/**)", "Read(//proc/**)"} <= set(denied)


# -- pinning the image by digest -----------------------------------------------------------------------


def test_an_image_pinned_by_its_id_in_the_reference_runs(container_backend, make_image, labeler_image):
    image = make_image()
    backend = container_backend(image=f"{labeler_image.tags[0]}@{labeler_image.id}")

    backend.check()
    assert isinstance(backend.label_batch([image], should_stop=never)[image.id], LabelResult)


def test_an_image_pinned_by_its_repo_digest_setting_runs(container_backend, make_image, labeler_image, settings):
    repo_digest = labeler_image.attrs["RepoDigests"][0].partition("@")[2]
    settings.LABEL_CONTAINER_IMAGE_DIGEST = repo_digest
    image = make_image()
    backend = container_backend(image_digest=None)

    assert backend.image_digest == repo_digest
    assert isinstance(backend.label_batch([image], should_stop=never)[image.id], LabelResult)


def test_an_image_that_does_not_match_its_pin_is_refused(container_backend, make_image, labeler_image,
                                                         docker_client):
    wrong = "sha256:" + "0" * 64
    for backend in (container_backend(image=f"{labeler_image.tags[0]}@{wrong}"),
                    container_backend(image_digest=wrong)):
        with pytest.raises(BackendUnavailable, match=rf"does not match its pinned digest {wrong}.*Refusing to run"):
            backend.check()
        with pytest.raises(BackendUnavailable, match="does not match its pinned digest"):
            backend.label_batch([make_image()], should_stop=never)
    assert labeler_containers(docker_client) == []


def test_a_malformed_or_conflicting_pin_is_a_clear_error(container_backend, labeler_image):
    with pytest.raises(BackendUnavailable, match="not of the form sha256:<64 hex digits>"):
        container_backend(image_digest="sha256:abc").check()
    with pytest.raises(BackendUnavailable, match="pins .* but IMAGINEER_LABEL_IMAGE_DIGEST pins"):
        pinned = f"{labeler_image.tags[0]}@{labeler_image.id}"
        container_backend(image=pinned, image_digest="sha256:" + "1" * 64).check()


def test_stale_containers_go_with_their_volumes(labeler_image, docker_client):
    from docker.types import Mount

    container = docker_client.containers.create(
        labeler_image.id, command=["sleep", "60"], labels={CONTAINER_LABEL: "claude-docker"}, network_mode="none",
        mounts=[Mount(target="/images", source=None, type="volume")],
    )
    container.start()
    assert len(docker_client.volumes.list()) == 1

    assert remove_stale_containers(client=docker_client) == 1
    assert docker_client.volumes.list() == []
