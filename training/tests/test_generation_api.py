"""Generation JSON API: create, follow, cancel; bad input is a 4xx with the reason; others' jobs are 404."""

from __future__ import annotations

import pytest

from imagineer.models import JobStatus
from imagineer.services import api_token_create
from training.generation.jobs import run_generation_inline
from training.models import GenerationJob
from training.tests.generation_fixtures import FAST

pytestmark = pytest.mark.usefixtures("media_root")


@pytest.fixture
def auth(user):
    return {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, name='t')[1]}"}


def _create(client, auth, **body):
    return client.post("/api/generations", {"prompt": "a red square", **FAST, **body}, content_type="application/json",
                       **auth)


def test_it_creates_follows_and_cancels_a_generation(client, auth, user, registry_loras, redis_conn):
    response = _create(client, auth, loras=[{"name": "style", "weight": 0.5}, {"name": "early"}], seed=11)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued" and body["queue_position"] == 1 and body["seed"] == 11
    assert body["loras"] == [{"name": "style", "weight": 0.5}, {"name": "early", "weight": 0.6}]
    assert GenerationJob.objects.get(pk=body["id"]).owner == user

    assert client.get(f"/api/generations/{body['id']}", **auth).json()["prompt"] == "a red square"
    cancelled = client.post(f"/api/generations/{body['id']}/cancel", **auth).json()
    assert cancelled["status"] == "cancelled" and cancelled["queue_position"] is None


def test_a_finished_generation_lists_its_images(transactional_db, client, auth, user, base_model):
    from training.generation.services import generation_create

    job = generation_create(user=user, prompt="x", seed=3, count=2, enqueue=False, **FAST)
    run_generation_inline(job.pk)
    body = client.get(f"/api/generations/{job.pk}", **auth).json()

    assert body["status"] == JobStatus.SUCCEEDED and body["step"] == body["total_steps"] == 2
    assert [(i["index"], i["seed"]) for i in body["images"]] == [(0, 3), (1, 4)]
    client.force_login(user)
    assert client.get(body["images"][0]["download_url"]).status_code == 200
    assert set(body["timings"]) >= {"load", "denoise", "save"}
    assert client.get("/api/generations", **auth).json()[0]["id"] == job.pk


@pytest.mark.parametrize(("body", "message"), [
    ({"prompt": ""}, "the prompt is empty"),
    ({"width": 30}, "width must be a multiple of 8"),
    ({"steps": 0}, "steps must be between 1 and 150"),
    ({"loras": [{"name": "ghost"}]}, "no LoRA named 'ghost' that you may use"),
    ({"loras": [{"name": "secret"}]}, "no LoRA named 'secret' that you may use"),
    ({"loras": [{"name": "xl-style"}]}, "cannot be used with tiny"),
    ({"base_model": "sd3"}, "Unknown base model 'sd3'"),
])
def test_bad_input_is_a_400_with_the_reason_and_nothing_is_queued(client, auth, registry_loras, body, message):
    response = _create(client, auth, **body)

    assert response.status_code == 400 and message in response.json()["detail"]
    assert not GenerationJob.objects.exists()


def test_a_malformed_body_is_a_422_not_a_500(client, auth, base_model):
    assert _create(client, auth, steps="lots").status_code == 422
    assert not GenerationJob.objects.exists()


def test_the_queue_limit_is_a_429(client, auth, base_model, settings, redis_conn):
    settings.GENERATE_MAX_QUEUED_PER_USER = 1
    assert _create(client, auth).status_code == 201
    response = _create(client, auth)
    assert response.status_code == 429 and "the limit is 1" in response.json()["detail"]


def test_other_users_generations_are_404_and_anonymous_callers_401(client, auth, other_user, base_model, redis_conn):
    from training.generation.services import generation_create

    theirs = generation_create(user=other_user, prompt="theirs", **FAST)
    assert client.get(f"/api/generations/{theirs.pk}", **auth).status_code == 404
    assert client.post(f"/api/generations/{theirs.pk}/cancel", **auth).status_code == 404
    assert client.get("/api/generations", **auth).json() == []
    assert client.post("/api/generations", {"prompt": "x"}, content_type="application/json").status_code == 401
    theirs.refresh_from_db()
    assert theirs.status == JobStatus.QUEUED
