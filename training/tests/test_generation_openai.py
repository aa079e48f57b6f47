"""The OpenAI-compatible images API: the official `openai` client against a running web server and worker."""

from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from PIL import Image as PILImage

from imagineer.jobs import queue_name
from imagineer.models import UserLimits
from imagineer.services import api_token_create
from training.ml.a1111 import parse_a1111_parameters, read_png_parameters
from training.models import GenerationJob

from .test_generation_two_workers import ROOT, _worker_env
from .test_runs_kill import shared_database

pytestmark = pytest.mark.usefixtures("media_root", "training_dirs")
URL = "/v1/images/generations"


def _post(client, body, token=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.post(URL, json.dumps(body), content_type="application/json", **headers)


# --- refusals, through Django's test client -------------------------------------------------------------------


def test_it_needs_a_bearer_token_and_ignores_the_session(client, user, base_model, redis_conn):
    client.force_login(user)
    response = _post(client, {"prompt": "x"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert _post(client, {"prompt": "x"}, token="nope").status_code == 401
    assert not GenerationJob.objects.exists()


@pytest.mark.parametrize(("body", "status", "param"), [
    ({}, 400, "prompt"),
    ({"prompt": "x", "size": "big"}, 400, "size"),
    ({"prompt": "x", "size": "33x32"}, 400, "size"),
    ({"prompt": "x", "n": 99}, 400, "n"),
    ({"prompt": "x", "n": "2"}, 400, "n"),
    ({"prompt": "x", "response_format": "png"}, 400, "response_format"),
    ({"prompt": "x", "model": "no-such-model"}, 404, "model"),
    ({"prompt": "x", "seed": "1"}, 400, "seed"),
])
def test_bad_requests_get_openai_style_errors_and_create_nothing(client, user, base_model, redis_conn, body, status,
                                                                 param):
    _, token = api_token_create(user=user, name="t")
    response = _post(client, body, token)
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]
    assert not GenerationJob.objects.exists()


def test_the_per_user_quota_answers_429(client, user, base_model, redis_conn):
    UserLimits.objects.create(user=user, max_active_generation=0)
    _, token = api_token_create(user=user, name="t")
    response = _post(client, {"prompt": "x", "size": "32x32"}, token)
    assert response.status_code == 429 and response.json()["error"]["type"] == "rate_limit_error"


def test_past_the_waiting_limit_it_answers_429_with_retry_after_and_queues_nothing(client, user, base_model,
                                                                                    redis_conn, settings):
    from training.generation import openai_api

    settings.OPENAI_IMAGES_MAX_WAITING = 1
    settings.OPENAI_IMAGES_WAIT_SECONDS = 1
    _, token = api_token_create(user=user, name="t")
    assert openai_api._waiting.acquire()  # another request of this process is waiting for its images
    try:
        busy = _post(client, {"prompt": "x", "size": "32x32"}, token)
    finally:
        openai_api._waiting.release()
    assert busy.status_code == 429 and busy["Retry-After"] == "5"
    assert busy.json()["error"]["code"] == "server_busy" and not GenerationJob.objects.exists()

    # With the slot free it queues; no worker runs here, so the wait runs out: the job is cancelled, 504,
    # and the slot is given back.
    late = _post(client, {"prompt": "x", "size": "32x32"}, token)
    assert late.status_code == 504 and GenerationJob.objects.get().cancel_requested
    assert openai_api._waiting.acquire()
    openai_api._waiting.release()


# --- the official client against a live server ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_server(url: str, proc: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the web server exited: {log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)  # noqa: S310 - a loopback URL built here
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("the web server did not start: " + log.read_text()[-3000:])


def test_the_openai_client_generates_through_the_queue(user, other_user, base_model, media_root, redis_conn,
                                                       transactional_db, tmp_path):
    openai = pytest.importorskip("openai")
    _, token = api_token_create(user=user, name="openai")
    _, limited = api_token_create(user=other_user, name="limited")
    UserLimits.objects.create(user=other_user, max_active_generation=0)
    port = _free_port()
    procs: list[subprocess.Popen] = []
    logs = {name: tmp_path / f"{name}.log" for name in ("web", "worker")}
    try:
        with shared_database(tmp_path) as database_env:
            env = _worker_env(database_env, tmp_path / "machine", media_root)
            commands = {
                "web": [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
                "worker": [sys.executable, "manage.py", "rqworker", queue_name("generate"), "--worker-class",
                           "imagineer.worker.WarmWorker"],
            }
            for name, command in commands.items():
                with logs[name].open("w") as out:
                    procs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                  start_new_session=True))
            _wait_for_server(f"http://127.0.0.1:{port}/livez", procs[0], logs["web"])
            client = openai.OpenAI(api_key=token, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0,
                                   timeout=240)

            result = client.images.generate(model="tiny", prompt="a (red:1.2) square", n=2, size="32x32",
                                            response_format="b64_json", extra_body={"steps": 2, "seed": 40})
            pictures = [base64.b64decode(item.b64_json) for item in result.data]
            assert len(pictures) == 2 and result.created > 0
            for index, data in enumerate(pictures):
                assert PILImage.open(io.BytesIO(data)).size == (32, 32)
                params = parse_a1111_parameters(read_png_parameters(data))
                assert (params["seed"], params["steps"], params["model"]) == (40 + index, 2, "tiny")

            # url: a signed link anyone holding it can fetch, without the token; the default model.
            linked = client.images.generate(prompt="a blue square", size="32x32", response_format="url",
                                            model="dall-e-3", extra_body={"steps": 2, "seed": 40})
            with urllib.request.urlopen(linked.data[0].url, timeout=30) as response:  # noqa: S310 - loopback
                fetched = response.read()
            assert PILImage.open(io.BytesIO(fetched)).size == (32, 32)
            assert parse_a1111_parameters(read_png_parameters(fetched))["prompt"] == "a blue square"

            with pytest.raises(openai.RateLimitError):
                openai.OpenAI(api_key=limited, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0).images.generate(
                    prompt="x", size="32x32")
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(api_key="wrong", base_url=f"http://127.0.0.1:{port}/v1", max_retries=0).images.generate(
                    prompt="x")
            with pytest.raises(openai.BadRequestError, match="multiple of 8"):
                client.images.generate(prompt="x", size="33x32")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=30)
    jobs = list(GenerationJob.objects.order_by("pk"))
    assert [(job.owner, job.count, job.status) for job in jobs] == [(user, 2, "succeeded"), (user, 1, "succeeded")]
