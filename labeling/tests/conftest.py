"""Fixtures for the labeling backends: a private podman API service with the stand-in labeler
image, a stand-in Anthropic API server, and generated images."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def podman_service():
    """podman's Docker-compatible API on a private socket, with DOCKER_HOST pointing at it.

    Skips when podman (or runc, busybox-static, root) is missing, except under CI, where it fails.
    """
    from labeling.testing.podman import podman_problem, start_podman_service

    problem = podman_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so the container tests must run, but {problem}", pytrace=False)
        pytest.skip(f"container tests skipped: {problem}")
    service = start_podman_service()
    previous = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = service.base_url
    try:
        yield service
    finally:
        if previous is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = previous
        service.stop()


@pytest.fixture(scope="session")
def docker_client(podman_service):
    client = podman_service.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def labeler_image(docker_client):
    from labeling.testing.image import import_test_image

    return import_test_image(docker_client)


def labeler_containers(client) -> list:
    from labeling.backends.container import CONTAINER_LABEL

    return client.containers.list(all=True, filters={"label": CONTAINER_LABEL})


@pytest.fixture
def claude_credentials(tmp_path) -> Path:
    """A Claude credentials dir like ~/.claude, readable by the container user."""
    directory = tmp_path / "claude-home"
    directory.mkdir()
    credentials = directory / ".credentials.json"
    credentials.write_text('{"claudeAiOauth": {"accessToken": "test-token"}}')
    credentials.chmod(0o644)
    return directory


@pytest.fixture
def container_backend(labeler_image, claude_credentials, docker_client, tmp_path):
    """Make a claude-docker backend that runs the stand-in image in `mode` (see fake_claude.sh)."""
    from labeling.backends import get_backend

    work_dir = tmp_path / "batches"
    work_dir.mkdir()

    def make(mode: str = "normal", **options):
        environment = {"FAKE_CLAUDE_MODE": mode, **options.pop("environment", {})}
        defaults = {
            "image": labeler_image.tags[0],
            "credentials_dir": claude_credentials,
            "api_key": "",
            "network_mode": "none",
            "timeout": 20,
            "memory": "256m",
            "cpus": 0.5,
            "pids": 64,
            "work_dir": work_dir,
        }
        return get_backend("claude-docker", environment=environment, **{**defaults, **options})

    make.work_dir = work_dir
    yield make
    # Every test must leave nothing behind, whatever happened in it.
    assert labeler_containers(docker_client) == []


@pytest.fixture
def make_image(tmp_path):
    """Write a generated image and return its ImageInput."""
    from PIL import Image

    from labeling.backends import ImageInput

    counter = {"id": 0}
    formats = {"png": ("PNG", "image/png"), "jpg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp"),
               "gif": ("GIF", "image/gif"), "bmp": ("BMP", "image/bmp"), "tiff": ("TIFF", "image/tiff")}

    def make(size=(800, 400), colour=(255, 0, 0), ext="png", *, picture=None, mode="RGB", **save_options):
        counter["id"] += 1
        picture = picture or Image.new(mode, size, colour)
        fmt, mime = formats[ext]
        path = tmp_path / f"source-{counter['id']}.{ext}"
        picture.save(path, fmt, **save_options)
        return ImageInput(id=counter["id"], path=path, mime=mime, width=picture.width, height=picture.height)

    return make


@pytest.fixture
def stub_anthropic():
    from labeling.testing.anthropic_stub import StubAnthropicServer

    server = StubAnthropicServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_tagger_dir(tmp_path_factory) -> Path:
    from labeling.testing.tiny_labelers import build_tiny_tagger

    return build_tiny_tagger(tmp_path_factory.mktemp("tiny-tagger"))


@pytest.fixture(scope="session")
def tiny_captioner_dir(tmp_path_factory) -> Path:
    from labeling.testing.tiny_labelers import build_tiny_captioner

    return build_tiny_captioner(tmp_path_factory.mktemp("tiny-captioner"))


def solid_png(colour, size=(64, 64)) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def colour_album(user, ingest):
    """An album of alice's with a red and a blue picture (the tiny tagger's favourite colours)."""
    from gallery import services as gallery_services

    album = gallery_services.album_create(owner=user, name="Colours")
    red = ingest(user, solid_png((255, 0, 0)), filename="red.png")
    blue = ingest(user, solid_png((0, 0, 255)), filename="blue.png")
    gallery_services.album_add_images(album=album, images=[red, blue])
    return album, red, blue


@pytest.fixture
def roles_album(user, other_user, make_user, ingest):
    """alice's private album "Shared" with one member per role (viewer, contributor, editor; bob stays
    outside), holding her private image `own` (a pending tagger label and a manual caption), the
    contributor's private image `contributed` (captioned), and bob's public image `bobs` (captioned) that
    she added. Her private image `outside` (captioned) is in no album. Logged-in clients per person."""
    from django.test import Client

    from gallery import services as gallery_services
    from gallery import sharing
    from imagineer.testing import image_bytes
    from labeling.models import Label, LabelKind
    from labeling.services import caption_set

    album = gallery_services.album_create(owner=user, name="Shared")
    people = {"owner": user, "other": other_user}
    for role in ("viewer", "contributor", "editor"):
        people[role] = make_user(role)
        sharing.member_set(album=album, username=role, role=role)
    own = ingest(user, image_bytes("PNG", seed=71), filename="own.png")
    contributed = ingest(people["contributor"], image_bytes("PNG", seed=72), filename="contributed.png")
    bobs = ingest(other_user, image_bytes("PNG", seed=73), filename="bobs.png", is_public=True)
    outside = ingest(user, image_bytes("PNG", seed=74), filename="outside.png")
    gallery_services.album_add_images(album=album, images=[own, contributed, bobs])
    for image in (own, contributed, bobs, outside):
        caption_set(image=image, user=image.owner, text="a grey cat")
    pending = Label.objects.create(image=own, kind=LabelKind.TAG, value="red theme", source="tagger",
                                   confidence=0.9)
    clients = {"anonymous": Client()}
    for who, person in people.items():
        clients[who] = Client()
        clients[who].force_login(person)
    return {"album": album, "people": people, "clients": clients, "own": own, "contributed": contributed,
            "bobs": bobs, "outside": outside, "pending": pending}
