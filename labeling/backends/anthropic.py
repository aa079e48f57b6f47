"""`anthropic`: label a batch with one Messages API request, the images attached as base64 blocks.

The base URL comes from settings (tests point it at a stand-in server on 127.0.0.1), the model
from ANTHROPIC_MODEL. Problems that would fail every batch (key rejected, API unreachable, model
unknown) raise BackendUnavailable; the rest fail the batch's images one by one.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Callable
from typing import Any

from .base import (
    ERROR_BACKEND,
    ERROR_CANCELLED,
    ERROR_IMAGE,
    ERROR_INVALID_ANSWER,
    ERROR_TIMEOUT,
    BackendUnavailable,
    ImageInput,
    LabelError,
    LabelOutcome,
    fill_missing,
)
from .prompt import PROMPT_VERSION, build_attached_prompt, image_key_label
from .schema import answer_to_outcomes

# What the Messages API accepts as-is; anything else, or anything too big, is re-encoded.
API_MEDIA_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}
MAX_IMAGE_BYTES = 3_750_000  # 5 MB once base64-encoded
MAX_LONG_EDGE = 1568  # larger images are scaled down by the API anyway; sending them only costs time
TOKENS_PER_IMAGE = 400


def encode_image(image: ImageInput) -> tuple[str, str]:
    """(media type, base64 data) for one image, re-encoded when the API would not take the original."""
    data = image.path.read_bytes()
    small_enough = len(data) <= MAX_IMAGE_BYTES and max(image.width, image.height) <= MAX_LONG_EDGE
    if image.mime in API_MEDIA_TYPES and small_enough:
        return image.mime, base64.standard_b64encode(data).decode("ascii")

    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as source:
        picture = ImageOps.exif_transpose(source)
        picture.thumbnail((MAX_LONG_EDGE, MAX_LONG_EDGE))
        has_alpha = picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info
        buffer = io.BytesIO()
        if has_alpha:
            picture.convert("RGBA").save(buffer, "PNG", optimize=True)
            media_type = "image/png"
        else:
            picture.convert("RGB").save(buffer, "JPEG", quality=90)
            media_type = "image/jpeg"
    return media_type, base64.standard_b64encode(buffer.getvalue()).decode("ascii")


class AnthropicBackend:
    name = "anthropic"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        model: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 2,
    ) -> None:
        from django.conf import settings

        self.api_key = api_key if api_key is not None else (settings.ANTHROPIC_API_KEY or None)
        self.base_url = base_url if base_url is not None else (settings.ANTHROPIC_BASE_URL or None)
        self.model = model or settings.ANTHROPIC_MODEL
        self.timeout = float(timeout)
        self.max_retries = max_retries

    def check(self) -> None:
        if not self.api_key:
            raise BackendUnavailable("The anthropic backend needs an API key: set ANTHROPIC_API_KEY.")

    def _client(self):
        # anthropic is imported here only: the web process never needs it.
        import anthropic

        return anthropic.Anthropic(
            api_key=self.api_key, base_url=self.base_url, timeout=self.timeout, max_retries=self.max_retries
        )

    def _request(self, images: list[ImageInput], encoded: dict[int, tuple[str, str]]) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": build_attached_prompt([i.key for i in images])}]
        for image in images:
            media_type, data = encoded[image.id]
            content.append({"type": "text", "text": image_key_label(image.key)})
            content.append({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}})
        return {
            "model": self.model,
            "max_tokens": min(16_000, 512 + TOKENS_PER_IMAGE * len(images)),
            "messages": [{"role": "user", "content": content}],
        }

    def label_batch(
        self, images: list[ImageInput], *, should_stop: Callable[[], bool]
    ) -> dict[int, LabelOutcome]:
        if not images:
            return {}
        self.check()
        outcomes: dict[int, LabelOutcome] = {}
        readable = []
        encoded: dict[int, tuple[str, str]] = {}
        for image in images:
            try:
                encoded[image.id] = encode_image(image)
            except Exception as exc:  # OSError, a Pillow decode error or bomb: one file fails itself, not the request
                outcomes[image.id] = LabelError(f"image file {image.path} cannot be read: {exc}", ERROR_IMAGE)
                continue
            readable.append(image)
        if not readable:
            return outcomes
        if should_stop():
            return fill_missing(images, outcomes, LabelError("cancelled before labelling", ERROR_CANCELLED))
        outcomes.update(self._send(readable, encoded, should_stop))
        return fill_missing(images, outcomes, LabelError("no outcome for this image", ERROR_BACKEND))

    def _send(
        self, images: list[ImageInput], encoded: dict[int, tuple[str, str]], should_stop: Callable[[], bool]
    ) -> dict[int, LabelOutcome]:
        import anthropic

        def every(message: str, code: str = ERROR_BACKEND) -> dict[int, LabelOutcome]:
            return {image.id: LabelError(message, code) for image in images}

        client = self._client()
        request = self._request(images, encoded)
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["response"] = client.messages.create(**request)
            except BaseException as exc:  # handed to the waiting thread below
                box["error"] = exc

        # The request runs in a helper thread so a cancel is noticed while it is in flight;
        # a cancelled request is abandoned (its answer, if any, is dropped).
        worker = threading.Thread(target=call, name="anthropic-label-request", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.2)
            if worker.is_alive() and should_stop():
                client.close()
                return every("cancelled while waiting for the Anthropic API", ERROR_CANCELLED)

        error = box.get("error")
        where = self.base_url or "the Anthropic API"
        if isinstance(error, anthropic.AuthenticationError):
            raise BackendUnavailable(f"Anthropic API key rejected (401): {_api_message(error)}")
        if isinstance(error, anthropic.PermissionDeniedError):
            raise BackendUnavailable(f"The Anthropic API key may not do this (403): {_api_message(error)}")
        if isinstance(error, anthropic.NotFoundError):
            raise BackendUnavailable(f"Anthropic API returned 404 for model {self.model!r}: {_api_message(error)}")
        if isinstance(error, anthropic.APITimeoutError):
            return every(f"timed out after {self.timeout:g} s waiting for the Anthropic API", ERROR_TIMEOUT)
        if isinstance(error, anthropic.APIConnectionError):
            raise BackendUnavailable(f"Cannot connect to {where}: {error.__cause__ or error}")
        if isinstance(error, anthropic.APIStatusError):
            return every(f"Anthropic API error {error.status_code}: {_api_message(error)}")
        if isinstance(error, anthropic.APIResponseValidationError | anthropic.APIError):
            return every(f"unexpected answer from {where}: {error}", ERROR_INVALID_ANSWER)
        if error is not None:
            raise error

        response = box["response"]
        text = "".join(getattr(block, "text", "") for block in response.content if block.type == "text")
        if response.stop_reason == "max_tokens":
            return every(f"the answer was cut off at max_tokens ({request['max_tokens']})", ERROR_INVALID_ANSWER)
        return answer_to_outcomes(text, images, model=response.model or self.model,
                                  version=f"prompt-{PROMPT_VERSION}")


def _api_message(error) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        detail = body.get("error")
        if isinstance(detail, dict) and detail.get("message"):
            return str(detail["message"])
    return str(getattr(error, "message", None) or error)
