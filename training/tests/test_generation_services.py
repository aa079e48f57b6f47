"""Creating generations: every bad input is refused with a clear reason before anything is written or queued."""

from __future__ import annotations

import pytest

from imagineer.models import JobStatus
from training.generation import selectors
from training.generation.services import (
    GenerationInputError,
    GenerationLimitReached,
    LoraChoice,
    generation_create,
    generation_rerun,
)
from training.ml.generate import MAX_SEED
from training.models import GenerationJob, GenerationLora
from training.tests.generation_fixtures import FAST

pytestmark = pytest.mark.usefixtures("media_root")


def _queued_tasks(redis_conn) -> int:
    from imagineer.jobs import get_queue

    return get_queue("generate").count


BAD_INPUTS = [
    ({"prompt": "   "}, "the prompt is empty"),
    ({"width": 100}, "width must be a multiple of 8"),
    ({"height": 4096}, "height must be a multiple of 8 between 8 and 2048"),
    ({"steps": 0}, "steps must be between 1 and 150"),
    ({"steps": 100000}, "steps must be between 1 and 150"),
    ({"count": 0}, "count must be between 1 and 8"),
    ({"scheduler": "magic"}, "unknown scheduler 'magic'"),
    ({"guidance_scale": 99.0}, "guidance scale must be between"),
    ({"seed": -1}, "seed must be between 0 and"),
    ({"seed": MAX_SEED, "count": 2}, "the seed must be at most"),
    ({"base_model": "nope"}, "Unknown base model 'nope'"),
    ({"loras": [LoraChoice("nobody-made-this")]}, "no LoRA named 'nobody-made-this' that you may use"),
    ({"loras": [LoraChoice("secret")]}, "no LoRA named 'secret' that you may use"),
    ({"loras": [LoraChoice("xl-style")]}, "'xl-style' was made for Stable Diffusion XL"),
    ({"loras": [LoraChoice("style"), LoraChoice("style", 0.2)]}, "'style' is listed twice"),
    ({"loras": [LoraChoice("style", 9.0)]}, "must be between -4 and 4"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_it_refuses_bad_input_before_anything_is_queued(user, registry_loras, redis_conn, overrides, message):
    before = _queued_tasks(redis_conn)
    with pytest.raises(GenerationInputError, match=message.replace("(", r"\(").replace("'", "'")):
        generation_create(user=user, **{"prompt": "a red square", **FAST, **overrides})

    assert GenerationJob.objects.count() == 0 and GenerationLora.objects.count() == 0
    assert _queued_tasks(redis_conn) == before


def test_it_names_every_problem_at_once(user, registry_loras, redis_conn):
    with pytest.raises(GenerationInputError) as info:
        generation_create(user=user, prompt="", width=30, steps=0)
    assert "prompt is empty" in str(info.value) and "width" in str(info.value) and "steps" in str(info.value)


def test_it_refuses_an_sdxl_lora_on_an_sd15_base_and_the_reverse(user, registry_loras, xl_base, redis_conn):
    with pytest.raises(GenerationInputError, match="cannot be used with tiny-xl"):
        generation_create(user=user, prompt="x", base_model="tiny-xl", loras=[LoraChoice("style")], **FAST)
    assert GenerationJob.objects.count() == 0


def test_it_queues_with_defaults_a_recorded_random_seed_and_registry_weights(
    user, registry_loras, redis_conn, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        job = generation_create(user=user, prompt="  a red square  ",
                                loras=[LoraChoice("style"), LoraChoice("early", 0.3)])

    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.rq_job_id and job.owner == user
    assert job.prompt == "a red square" and job.base_model.name == "tiny"
    # The base model's own size (the tiny model's is 64 px; 512 would take it minutes on a CPU).
    assert (job.width, job.height, job.steps, job.scheduler, job.count) == (64, 64, 25, "euler_a", 1)
    assert 0 <= job.seed <= MAX_SEED and job.counters["seed_was_random"] is True
    assert [(e.lora.name, e.weight, e.position) for e in selectors.lora_entries(job)] == [
        ("style", 1.0, 0), ("early", 0.3, 1)]
    assert _queued_tasks(redis_conn) == 1
    assert selectors.queue_position(job) == 1


def test_an_sdxl_base_defaults_to_its_native_size(user, xl_base, redis_conn):
    job = generation_create(user=user, prompt="x", base_model="tiny-xl")
    assert (job.width, job.height) == (1024, 1024)


def test_nobody_generates_with_another_users_private_lora_but_staff_may(user, staff_user, registry_loras, redis_conn):
    with pytest.raises(GenerationInputError, match="'secret'"):
        generation_create(user=user, prompt="x", loras=[LoraChoice(registry_loras["secret"])], **FAST)
    public = generation_create(user=user, prompt="x", loras=[LoraChoice("early")], **FAST)
    staff = generation_create(user=staff_user, prompt="x", loras=[LoraChoice("secret")], **FAST)

    assert public.loras.get().name == "early" and staff.loras.get().name == "secret"


def test_it_limits_how_many_generations_a_user_has_waiting(
    user, other_user, base_model, settings, redis_conn, django_capture_on_commit_callbacks
):
    settings.GENERATE_MAX_QUEUED_PER_USER = 2
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(2):
            generation_create(user=user, prompt="x", **FAST)
    with pytest.raises(GenerationLimitReached, match="already have 2 generations waiting"):
        generation_create(user=user, prompt="x", **FAST)

    assert GenerationJob.objects.filter(owner=user).count() == 2 and _queued_tasks(redis_conn) == 2
    generation_create(user=other_user, prompt="x", **FAST)  # the limit is per user
    GenerationJob.objects.filter(owner=user).update(status=JobStatus.SUCCEEDED)
    generation_create(user=user, prompt="x", **FAST)  # finished jobs do not count


def test_it_explains_that_no_base_model_is_registered(user, db, redis_conn):
    with pytest.raises(GenerationInputError, match="No base model is registered"):
        generation_create(user=user, prompt="x")


def test_a_rerun_repeats_the_settings_and_the_seed(user, registry_loras, redis_conn):
    job = generation_create(user=user, prompt="x", negative_prompt="blur", loras=[LoraChoice("style", 0.4)],
                            seed=1234, count=2, guidance_scale=5.5, **FAST)
    again = generation_rerun(user=user, job=job)

    fields = ("prompt", "negative_prompt", "base_model_id", "scheduler", "steps", "guidance_scale", "seed", "width",
              "height", "count")
    assert [getattr(again, f) for f in fields] == [getattr(job, f) for f in fields]
    assert [(e.lora_id, e.weight) for e in selectors.lora_entries(again)] == [(registry_loras["style"].pk, 0.4)]
    assert again.counters["seed_was_random"] is False


def test_queue_positions_follow_the_fair_order(user, other_user, make_user, base_model, redis_conn):
    carol = make_user("carol")
    a = [generation_create(user=user, prompt=f"a{i}", **FAST) for i in range(3)]
    b = [generation_create(user=other_user, prompt=f"b{i}", **FAST) for i in range(2)]
    c = generation_create(user=carol, prompt="c0", **FAST)

    assert [job.pk for job in selectors.fair_order()] == [a[0].pk, b[0].pk, c.pk, a[1].pk, b[1].pk, a[2].pk]
    assert selectors.queue_position(c) == 3


def test_a_user_who_just_had_a_turn_waits_behind_the_others(user, other_user, base_model, redis_conn):
    from django.utils import timezone

    a = [generation_create(user=user, prompt=f"a{i}", **FAST) for i in range(2)]
    b = generation_create(user=other_user, prompt="b", **FAST)
    GenerationJob.objects.filter(pk=a[0].pk).update(status=JobStatus.RUNNING, started_at=timezone.now())

    assert [job.pk for job in selectors.fair_order()] == [b.pk, a[1].pk]


def test_each_task_claims_a_different_row_and_a_spare_task_claims_nothing(user, other_user, base_model, redis_conn):
    from training.generation.services import generation_claim_next

    a = generation_create(user=user, prompt="a", **FAST)
    b = generation_create(user=other_user, prompt="b", **FAST)
    first = generation_claim_next(task_id=b.rq_job_id)  # b's task starts the fairest row, a, and hands a its task
    second = generation_claim_next(task_id=a.rq_job_id)

    assert (first.pk, second.pk) == (a.pk, b.pk)
    assert first.status == second.status == JobStatus.RUNNING
    assert (first.rq_job_id, second.rq_job_id) == (b.rq_job_id, a.rq_job_id)
    assert generation_claim_next(task_id="spare") is None
