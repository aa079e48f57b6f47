"""The anthropic backend against a stand-in Messages API server on 127.0.0.1."""

from __future__ import annotations

import socket
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
    get_backend,
)
from labeling.backends.prompt import PROMPT_VERSION


def never() -> bool:
    return False


@pytest.fixture
def backend(stub_anthropic):
    def make(**options):
        defaults = {"api_key": stub_anthropic.api_key, "base_url": stub_anthropic.base_url,
                    "model": "claude-test-model", "timeout": 10, "max_retries": 0}
        return get_backend("anthropic", **{**defaults, **options})

    return make


def test_it_labels_a_batch_with_the_images_attached(backend, stub_anthropic, make_image):
    red = make_image((800, 400), ext="png")
    photo = make_image((300, 200), (0, 0, 255), ext="jpg")

    outcomes = backend().label_batch([red, photo], should_stop=never)

    assert outcomes[red.id] == LabelResult(
        caption=f"A stand-in caption for {red.key}.", tags=["stub", "800x400", "png"], categories=["test"],
        nsfw=False, nsfw_confidence=0.9, model="claude-stub-1", version=f"prompt-{PROMPT_VERSION}",
    )
    assert outcomes[photo.id].tags == ["stub", "300x200", "jpeg"]
    (request,) = stub_anthropic.requests
    assert stub_anthropic.sent_key(request["headers"]) == stub_anthropic.api_key
    assert request["headers"]["anthropic-version"]
    assert request["body"]["model"] == "claude-test-model"
    assert request["images"] == [(red.key, "image/png", (800, 400)), (photo.key, "image/jpeg", (300, 200))]


def test_it_reads_key_url_and_model_from_settings(settings, stub_anthropic, make_image):
    settings.ANTHROPIC_API_KEY = stub_anthropic.api_key
    settings.ANTHROPIC_BASE_URL = stub_anthropic.base_url
    settings.ANTHROPIC_MODEL = "claude-from-settings"
    image = make_image()

    outcome = get_backend("anthropic", max_retries=0).label_batch([image], should_stop=never)[image.id]

    assert isinstance(outcome, LabelResult)
    assert stub_anthropic.requests[0]["body"]["model"] == "claude-from-settings"


def test_formats_the_api_does_not_take_and_big_images_are_re_encoded(backend, stub_anthropic, make_image):
    bitmap = make_image((64, 48), (0, 255, 0), ext="bmp")
    tiff = make_image((40, 40), ext="tiff", mode="RGBA", colour=(0, 0, 0, 0))
    wide = make_image((3000, 1000), (10, 10, 10), ext="png")

    outcomes = backend().label_batch([bitmap, tiff, wide], should_stop=never)

    assert all(isinstance(outcome, LabelResult) for outcome in outcomes.values()), outcomes
    assert stub_anthropic.requests[0]["images"] == [
        (bitmap.key, "image/jpeg", (64, 48)),
        (tiff.key, "image/png", (40, 40)),  # transparency kept
        (wide.key, "image/jpeg", (1568, 523)),
    ]


def test_a_rejected_key_makes_the_backend_unavailable(backend, make_image):
    with pytest.raises(BackendUnavailable, match=r"Anthropic API key rejected \(401\): invalid x-api-key"):
        backend(api_key="sk-ant-wrong").label_batch([make_image()], should_stop=never)


def test_a_malformed_answer_fails_every_image(backend, stub_anthropic, make_image):
    stub_anthropic.mode = "malformed"
    images = [make_image(), make_image()]

    outcomes = backend().label_batch(images, should_stop=never)

    for image in images:
        assert isinstance(outcomes[image.id], LabelError)
        assert outcomes[image.id].code == ERROR_INVALID_ANSWER
        assert outcomes[image.id].message.startswith("invalid answer: the answer is not valid JSON")


def test_an_invalid_entry_fails_only_that_image(backend, stub_anthropic, make_image):
    stub_anthropic.mode = "invalid-entry"
    first, second = make_image(), make_image()

    outcomes = backend().label_batch([first, second], should_stop=never)

    assert outcomes[first.id] == LabelError(
        f'invalid answer for {first.key}: nsfw must be true or false, got a string "maybe"', ERROR_INVALID_ANSWER
    )
    assert isinstance(outcomes[second.id], LabelResult)


def test_a_server_error_fails_the_batch_with_the_status(backend, stub_anthropic, make_image):
    stub_anthropic.mode = "error"
    image = make_image()

    outcome = backend().label_batch([image], should_stop=never)[image.id]

    assert outcome == LabelError("Anthropic API error 500: stand-in internal error", ERROR_BACKEND)


def test_a_slow_answer_times_out(backend, stub_anthropic, make_image):
    stub_anthropic.delay = 3
    images = [make_image(), make_image()]

    outcomes = backend(timeout=0.5).label_batch(images, should_stop=never)

    assert outcomes == {
        image.id: LabelError("timed out after 0.5 s waiting for the Anthropic API", ERROR_TIMEOUT) for image in images
    }


def test_a_cancel_is_noticed_while_the_request_is_in_flight(backend, stub_anthropic, make_image):
    stub_anthropic.delay = 3
    image = make_image()
    started = time.monotonic()

    outcome = backend().label_batch([image], should_stop=lambda: time.monotonic() - started > 0.3)[image.id]

    assert outcome.code == ERROR_CANCELLED
    assert time.monotonic() - started < 2


def test_a_refused_connection_makes_the_backend_unavailable(backend, make_image):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(BackendUnavailable, match=f"Cannot connect to http://127.0.0.1:{port}"):
        backend(base_url=f"http://127.0.0.1:{port}").label_batch([make_image()], should_stop=never)


def test_an_unreadable_image_fails_alone(backend, make_image, tmp_path):
    good = make_image()
    broken = make_image()
    broken.path.write_bytes(b"not an image at all")
    broken = type(broken)(id=broken.id, path=broken.path, mime="image/bmp", width=10, height=10)

    outcomes = backend().label_batch([good, broken], should_stop=never)

    assert isinstance(outcomes[good.id], LabelResult)
    assert outcomes[broken.id].code == ERROR_IMAGE
