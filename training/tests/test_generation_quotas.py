"""Generation limits: queued plus running per user (with per-user overrides) and the cost ceiling of one request."""

from __future__ import annotations

import re

import pytest

from imagineer.models import JobStatus, UserLimits
from imagineer.quotas import QuotaExceeded
from imagineer.services import api_token_create
from training.generation.services import GenerationInputError, generation_create
from training.models import GenerationJob
from training.tests.generation_fixtures import FAST

pytestmark = pytest.mark.usefixtures("media_root")


def test_running_generations_count_against_the_limit(user, base_model, settings, redis_conn):
    settings.GENERATE_MAX_QUEUED_PER_USER = 2
    first = generation_create(user=user, prompt="x", **FAST)
    generation_create(user=user, prompt="x", **FAST)
    GenerationJob.objects.filter(pk=first.pk).update(status=JobStatus.RUNNING)

    with pytest.raises(QuotaExceeded, match=r"already have 2 generations waiting or running \(the limit is 2\)"):
        generation_create(user=user, prompt="x", **FAST)
    assert GenerationJob.objects.count() == 2


def test_staff_are_limited_too_unless_given_an_override(staff_user, base_model, settings, redis_conn):
    settings.GENERATE_MAX_QUEUED_PER_USER = 1
    generation_create(user=staff_user, prompt="x", **FAST)
    with pytest.raises(QuotaExceeded):
        generation_create(user=staff_user, prompt="x", **FAST)

    UserLimits.objects.create(user=staff_user, max_active_generation=2)
    generation_create(user=staff_user, prompt="x", **FAST)
    assert GenerationJob.objects.filter(owner=staff_user).count() == 2


def test_a_rerun_over_the_limit_is_a_message_not_an_error_page(user_client, user, base_model, settings, redis_conn):
    settings.GENERATE_MAX_QUEUED_PER_USER = 1
    job = generation_create(user=user, prompt="x", **FAST)
    response = user_client.post(f"/training/generations/{job.pk}/regenerate/", follow=True)

    assert response.status_code == 200 and "the limit is 1" in response.content.decode()
    assert GenerationJob.objects.count() == 1


# -- the cost ceiling -----------------------------------------------------------------------------------------

def test_the_default_ceiling_lets_a_usual_batch_through_and_refuses_a_huge_one(user, base_model):
    fine = generation_create(user=user, prompt="x", width=1024, height=1024, count=4, steps=50, enqueue=False)
    assert fine.pk

    with pytest.raises(GenerationInputError, match="megapixels per denoising step; the limit is 4.2"):
        generation_create(user=user, prompt="x", width=2048, height=2048, count=8, steps=150, enqueue=False)
    with pytest.raises(GenerationInputError, match="million pixel-steps; the limit for one request is 314.6 million"):
        generation_create(user=user, prompt="x", width=1024, height=1024, count=4, steps=100, enqueue=False)
    assert GenerationJob.objects.count() == 1


def test_the_ceiling_follows_the_setting(user, base_model, settings):
    settings.GENERATE_MAX_COST = 32 * 32 * 2
    generation_create(user=user, prompt="x", **FAST, enqueue=False)  # 32 × 32 × 1 × 2 steps: at the ceiling
    with pytest.raises(GenerationInputError, match="pixel-steps"):
        generation_create(user=user, prompt="x", **{**FAST, "steps": 3}, enqueue=False)


def test_the_form_shows_the_ceiling_next_to_the_field_and_queues_nothing(user_client, base_model):
    response = user_client.post("/training/generate/", {
        "prompt": "a red square", "base_model": base_model.pk, "scheduler": "euler", "guidance_scale": 7,
        "seed": "", "width": 2048, "height": 2048, "count": 8, "steps": 150,
    })
    html = response.content.decode()

    assert response.status_code == 400
    message = re.search(r'name="count".*?megapixels per denoising step', html, re.S)
    assert message and "<p>" not in message.group(0), "the message sits right after the Images field"
    assert not GenerationJob.objects.exists()


def test_the_api_refuses_a_request_over_the_ceiling_with_the_reason(client, user, base_model):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, name='t')[1]}"}
    response = client.post("/api/generations", {"prompt": "x", "width": 1024, "height": 1024, "count": 8,
                                                "steps": 50}, content_type="application/json", **auth)

    assert response.status_code == 400 and "megapixels per denoising step" in response.json()["detail"]
    assert not GenerationJob.objects.exists()
