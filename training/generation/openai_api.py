"""An OpenAI-compatible images endpoint, so tools written for OpenAI's images API can use Imagineer.

POST /v1/images/generations with OpenAI's body (prompt, n, size "WxH", response_format b64_json|url, model) and
`Authorization: Bearer <an Imagineer API token>`. The request becomes an ordinary generation job (same service,
same per-user quota and cost ceiling, same fair queue and workers); the view waits for it like OpenAI's API does
and answers in OpenAI's shape. `model` is a base model name; OpenAI's own model names (dall-e-*, gpt-image-*)
and an absent model mean the default base model. Extra fields Imagineer understands: negative_prompt, seed,
steps, guidance_scale, scheduler. Errors use OpenAI's {"error": {...}} body, 429 at the quota.

`url` results are links signed for an hour (like OpenAI's expiring URLs), readable without the token.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time

from django.conf import settings
from django.core import signing
from django.core.files.storage import default_storage
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from gallery.models import Image
from imagineer.jobs import QueueUnavailable, job_cancel
from imagineer.models import JobStatus
from imagineer.quotas import QuotaExceeded

from ..models import BaseModel, GenerationJob
from . import selectors, services

URL_MAX_AGE = 3600
_SIGNER_SALT = "imagineer.openai.image"
_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_OPENAI_MODELS = ("dall-e", "gpt-image")
_EXTRA_FIELDS = {"negative_prompt": str, "seed": int, "steps": int, "guidance_scale": float, "scheduler": str}


def _error(status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None,
           code: str | None = None) -> JsonResponse:
    return JsonResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status=status)


def _bearer_user(request: HttpRequest):
    from imagineer.api import TokenAuth

    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return TokenAuth().authenticate(request, token.strip())


def _wait_seconds() -> float:
    return float(settings.OPENAI_IMAGES_WAIT_SECONDS)


@csrf_exempt  # bearer tokens only: no cookie is read, so there is nothing to forge
@require_POST
def images_generations(request: HttpRequest) -> HttpResponse:
    user = _bearer_user(request)
    if user is None:
        return _error(401, "Missing or invalid API token: send 'Authorization: Bearer <token>' with a token from "
                      "your Imagineer settings page.", kind="authentication_error", code="invalid_api_key")
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return _error(400, "The body must be JSON.")
    if not isinstance(body, dict):
        return _error(400, "The body must be a JSON object.")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return _error(400, "prompt is required.", param="prompt")
    n = body.get("n", 1)
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool):
        return _error(400, "n must be an integer.", param="n")
    response_format = body.get("response_format") or "url"
    if response_format not in ("url", "b64_json"):
        return _error(400, "response_format must be 'url' or 'b64_json'.", param="response_format")
    width = height = None
    size = body.get("size") or "auto"
    if size != "auto":
        match = _SIZE.match(str(size))
        if not match:
            return _error(400, "size must be 'WIDTHxHEIGHT' (e.g. '512x512') or 'auto'.", param="size")
        width, height = int(match.group(1)), int(match.group(2))
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        return _error(400, "model must be a base model name.", param="model")
    base = None
    if model and not model.startswith(_OPENAI_MODELS):
        base = BaseModel.objects.filter(name=model).first()
        if base is None:
            return _error(404, f"The model {model!r} does not exist here.", param="model", code="model_not_found")
    extras = {}
    for name, kind in _EXTRA_FIELDS.items():
        if body.get(name) is not None:
            value = _typed(body[name], kind)
            if value is None:
                return _error(400, f"{name} must be a {'number' if kind is float else kind.__name__}.", param=name)
            extras[name] = value
    if not _waiting.acquire():
        response = _error(429, "Too many image requests are waiting on this server; retry in a few seconds.",
                          kind="rate_limit_error", code="server_busy")
        response["Retry-After"] = "5"
        return response
    try:
        return _generate_and_wait(request, user, prompt, base, width, height, n, response_format, extras)
    finally:
        _waiting.release()


class _WaitingSlots:
    """How many requests of this web process are waiting for their images (OPENAI_IMAGES_MAX_WAITING at most)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._count = 0

    def acquire(self) -> bool:
        with self._lock:
            if self._count >= settings.OPENAI_IMAGES_MAX_WAITING:
                return False
            self._count += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._count -= 1


_waiting = _WaitingSlots()


def _generate_and_wait(request, user, prompt, base, width, height, n, response_format, extras) -> HttpResponse:
    try:
        job = services.generation_create(user=user, prompt=prompt, base_model=base, width=width, height=height,
                                         count=n, **extras)
    except QuotaExceeded as exc:
        return _error(429, str(exc), kind="rate_limit_error", code="rate_limit_exceeded")
    except services.GenerationInputError as exc:
        param = next(iter(exc.fields), None)
        return _error(400, str(exc), param={"count": "n", "width": "size", "height": "size"}.get(param, param))
    except QueueUnavailable as exc:
        return _error(503, str(exc), kind="server_error")

    job = _wait(job)
    if job.status != JobStatus.SUCCEEDED:
        if not job.is_finished:
            job_cancel(job)
            return _error(504, f"Generation {job.pk} did not finish in time; it was cancelled.", kind="server_error")
        return _error(500, f"Generation {job.pk} {job.get_status_display().lower()}: {job.error or job.message}",
                      kind="server_error")
    data = []
    for image in selectors.job_images(job):
        if response_format == "b64_json":
            with default_storage.open(image.file.name, "rb") as handle:
                data.append({"b64_json": base64.b64encode(handle.read()).decode(), "revised_prompt": job.prompt})
        else:
            token = signing.dumps({"image": image.pk, "user": user.pk}, salt=_SIGNER_SALT)
            data.append({"url": request.build_absolute_uri(reverse("openai:image_file", args=[token])),
                         "revised_prompt": job.prompt})
    return JsonResponse({"created": int(job.created_at.timestamp()), "data": data,
                         "imagineer": {"generation_id": job.pk, "seed": job.seed,
                                       "base_model": job.base_model.name}})


def _typed(value, kind):
    """value as kind, or None when it is not one (JSON true is no number, 2.5 no integer)."""
    if kind is str:
        return value if isinstance(value, str) else None
    if isinstance(value, bool):
        return None
    if kind is int:
        return value if isinstance(value, int) else None
    return float(value) if isinstance(value, (int, float)) else None


def _wait(job: GenerationJob) -> GenerationJob:
    """Poll the row until the job ends or the wait runs out (OpenAI's API answers with the images)."""
    deadline = time.monotonic() + _wait_seconds()
    interval = 0.05
    while True:
        job.refresh_from_db()
        if job.is_finished or time.monotonic() >= deadline:
            return job
        time.sleep(interval)
        interval = min(0.5, interval * 1.5)


@require_GET
def image_file(request: HttpRequest, token: str) -> HttpResponse:
    """A generated image by a signed link from a `url` response (valid for an hour, for its owner's images)."""
    try:
        payload = signing.loads(token, salt=_SIGNER_SALT, max_age=URL_MAX_AGE)
    except signing.BadSignature:
        return _error(404, "This image link is invalid or has expired.")
    image = Image.objects.filter(pk=payload.get("image"), owner_id=payload.get("user")).first()
    if image is None:
        return _error(404, "This image no longer exists.")
    with default_storage.open(image.file.name, "rb") as handle:
        data = handle.read()
    response = HttpResponse(data, content_type=f"image/{(image.format or 'png').lower()}")
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, max-age=3600"
    return response
