"""A stand-in for the Anthropic Messages API on 127.0.0.1, for the `anthropic` backend's tests.

It checks what a real request must look like (the API key in x-api-key or as a Bearer token, anthropic-version, model,
max_tokens, one user message whose images are base64 image blocks each preceded by its key)
and answers in the Messages API response format. The answer labels each attached image with
tags that describe the decoded picture (its size and media type), so a test can tell the right
images were sent. `mode` switches the behaviour: normal, malformed, invalid-entry, slow, error.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

IMAGE_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF", "image/webp": "WEBP"}
KEY_PREFIX = "Image key: "


class RequestShapeError(ValueError):
    pass


def check_request(body: Any) -> list[tuple[str, str, tuple[int, int]]]:
    """(key, media type, decoded size) per attached image; RequestShapeError if the shape is wrong."""
    from PIL import Image

    if not isinstance(body, dict):
        raise RequestShapeError("body must be an object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise RequestShapeError("model: required string")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        raise RequestShapeError("max_tokens: required positive integer")
    messages = body.get("messages")
    if not isinstance(messages, list) or len(messages) != 1 or messages[0].get("role") != "user":
        raise RequestShapeError("messages: expected exactly one user message")
    content = messages[0].get("content")
    if not isinstance(content, list) or not content or content[0].get("type") != "text":
        raise RequestShapeError("content: expected a list starting with the prompt text")
    images = []
    pending_key = None
    for index, block in enumerate(content[1:], start=1):
        if block.get("type") == "text":
            text = block.get("text", "")
            if not text.startswith(KEY_PREFIX):
                raise RequestShapeError(f"content.{index}: text block is not an image key label")
            pending_key = text[len(KEY_PREFIX):]
        elif block.get("type") == "image":
            source = block.get("source") or {}
            if source.get("type") != "base64":
                raise RequestShapeError(f"content.{index}.source.type: expected base64")
            media_type = source.get("media_type")
            if media_type not in IMAGE_TYPES:
                raise RequestShapeError(f"content.{index}.source.media_type: {media_type!r} is not supported")
            if pending_key is None:
                raise RequestShapeError(f"content.{index}: image without a key label before it")
            try:
                raw = base64.b64decode(source.get("data", ""), validate=True)
                with Image.open(io.BytesIO(raw), formats=[IMAGE_TYPES[media_type]]) as picture:
                    size = picture.size
            except Exception as exc:
                raise RequestShapeError(f"content.{index}.source.data: not a {media_type} image ({exc})")
            if pending_key not in content[0]["text"]:
                raise RequestShapeError(f"content.{index}: key {pending_key!r} is not named in the prompt")
            images.append((pending_key, media_type, size))
            pending_key = None
        else:
            raise RequestShapeError(f"content.{index}.type: unexpected {block.get('type')!r}")
    if not images:
        raise RequestShapeError("content: no images attached")
    return images


def label_answer(images, *, invalid_first: bool = False) -> str:
    answer = {}
    for index, (key, media_type, (width, height)) in enumerate(images):
        answer[key] = {
            "caption": f"A stand-in caption for {key}.",
            "tags": ["Stub", f"{width}x{height}", media_type.split("/")[1], "stub"],
            "categories": ["test"],
            "nsfw": "maybe" if invalid_first and index == 0 else False,
            "nsfw_confidence": 0.9,
        }
    return "```json\n" + json.dumps(answer, indent=2) + "\n```"


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # a client that gave up (timeout or cancel tests) closes the socket mid-answer


class StubAnthropicServer:
    def __init__(self, *, api_key: str = "sk-ant-test-key", model: str = "claude-stub-1") -> None:
        self.api_key = api_key
        self.model = model
        self.mode = "normal"
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self._server: _QuietServer | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def sent_key(headers) -> str | None:
        """The API key a request carries: `x-api-key`, or `Authorization: Bearer` (newer SDKs send that)."""
        headers = {name.lower(): value for name, value in headers.items()}
        if headers.get("x-api-key"):
            return headers["x-api-key"]
        scheme, _, token = (headers.get("authorization") or "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> StubAnthropicServer:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("request-id", "req_stub")
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, kind: str, message: str) -> None:
                self._send(status, {"type": "error", "error": {"type": kind, "message": message}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                record = {"path": self.path, "headers": dict(self.headers.items()), "body": None}
                stub.requests.append(record)
                if self.path.split("?")[0] != "/v1/messages":
                    return self._error(404, "not_found_error", f"no route {self.path}")
                if stub.sent_key(self.headers) != stub.api_key:
                    return self._error(401, "authentication_error", "invalid x-api-key")
                if not self.headers.get("anthropic-version"):
                    return self._error(400, "invalid_request_error", "anthropic-version header is required")
                try:
                    body = json.loads(raw)
                    record["body"] = body
                    images = check_request(body)
                except (ValueError, RequestShapeError) as exc:
                    return self._error(400, "invalid_request_error", str(exc))
                record["images"] = images
                if stub.delay:
                    time.sleep(stub.delay)
                if stub.mode == "error":
                    return self._error(500, "api_error", "stand-in internal error")
                if stub.mode == "malformed":
                    text = "I am sorry, here are some labels: {img: nice}"
                else:
                    text = label_answer(images, invalid_first=stub.mode == "invalid-entry")
                self._send(200, {
                    "id": "msg_stub_01", "type": "message", "role": "assistant", "model": stub.model,
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn", "stop_sequence": None,
                    "usage": {"input_tokens": 100, "output_tokens": 50},
                })

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="stub-anthropic", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
