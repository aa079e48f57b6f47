"""Batching across users in the generate worker: one pass, each job's own image, fair order, cancel of one."""

from __future__ import annotations

import numpy as np
import pytest

from imagineer.models import JobStatus
from training.generation import selectors, services
from training.generation.jobs import run_generation_inline
from training.generation.services import generation_create
from training.models import GenerationJob
from training.tests.generation_fixtures import FAST, pixels

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("media_root")]


def _done(job) -> GenerationJob:
    job.refresh_from_db()
    return job


def _alone(owner, job) -> list[np.ndarray]:
    """The same request run on its own (inline, no batch) by the same user."""
    again = generation_create(user=owner, enqueue=False, **services.generation_settings(job))
    run_generation_inline(again.pk)
    return [pixels(image) for image in selectors.job_images(_done(again))]


def _same(a, b) -> bool:
    return a.shape == b.shape and np.abs(a - b).max() <= 2


@pytest.fixture
def three_users(user, other_user, make_user):
    return user, other_user, make_user("carol")


def test_compatible_jobs_of_several_users_share_a_pass_and_each_gets_its_own_image(three_users, base_model,
                                                                                    run_worker):
    alice, bob, carol = three_users
    a = generation_create(user=alice, prompt="alice's (red:1.2) square", seed=1, **FAST)
    b = generation_create(user=bob, prompt="bob's circle", negative_prompt="dark", seed=2, count=2, **FAST)
    c = generation_create(user=carol, prompt="carol's triangle", seed=3, **FAST)
    other = generation_create(user=alice, prompt="more steps", seed=4, **{**FAST, "steps": 3})
    run_worker("generate")

    jobs = [_done(job) for job in (a, b, c, other)]
    assert [job.status for job in jobs] == [JobStatus.SUCCEEDED] * 4, [job.error for job in jobs]
    assert [job.attempts for job in jobs] == [1] * 4
    batch = [a.pk, b.pk, c.pk]
    assert all(job.counters.get("batched_with") == batch for job in jobs[:3])
    assert "batched_with" not in jobs[3].counters  # other settings: its own pass, after the batch
    assert jobs[3].started_at > max(job.started_at for job in jobs[:3])
    for job in jobs[:3]:
        made = [pixels(image) for image in selectors.job_images(job)]
        assert len(made) == job.count and job.step == job.total_steps == 2
        assert all(_same(x, y) for x, y in zip(made, _alone(job.owner, job), strict=True)), job.prompt


def test_only_the_compatible_rows_right_behind_the_first_join_it(three_users, base_model, run_worker):
    alice, bob, carol = three_users
    a = generation_create(user=alice, prompt="a", seed=1, **FAST)
    b = generation_create(user=bob, prompt="b", seed=2, **{**FAST, "width": 40})  # next in fair order, other size
    c = generation_create(user=carol, prompt="c", seed=3, **FAST)  # compatible with a, but behind b
    run_worker("generate")

    jobs = [_done(job) for job in (a, b, c)]
    assert all(job.status == JobStatus.SUCCEEDED for job in jobs)
    assert not any("batched_with" in job.counters for job in jobs)  # c did not jump over b
    assert jobs[0].started_at < jobs[1].started_at < jobs[2].started_at


def test_cancelling_one_batched_job_leaves_the_others(three_users, base_model, run_worker, monkeypatch):
    alice, bob, carol = three_users
    a = generation_create(user=alice, prompt="alice", seed=1, **FAST)
    b = generation_create(user=bob, prompt="bob cancels", seed=2, **FAST)
    c = generation_create(user=carol, prompt="carol", seed=3, **FAST)
    monkeypatch.setattr(services, "PROGRESS_INTERVAL", 0.0)
    original = services._Progress.on_step

    def cancel_bob_after_the_first_step(self, step, total):
        original(self, step, total)
        if self.ctx.job.pk == b.pk and step == 1:
            GenerationJob.objects.filter(pk=b.pk).update(cancel_requested=True)  # as the cancel button does

    monkeypatch.setattr(services._Progress, "on_step", cancel_bob_after_the_first_step)
    run_worker("generate")

    a, b, c = (_done(job) for job in (a, b, c))
    assert b.status == JobStatus.CANCELLED and selectors.job_images(b) == []
    assert a.status == c.status == JobStatus.SUCCEEDED, (a.error, c.error)
    assert a.counters["batched_with"] == [a.pk, b.pk, c.pk]
    for job in (a, c):
        assert _same(pixels(selectors.job_images(job)[0]), _alone(job.owner, job)[0])


def test_batching_can_be_turned_off(three_users, base_model, run_worker, settings):
    settings.GENERATE_BATCH_MAX_IMAGES = 1
    alice, bob, _ = three_users
    jobs = [generation_create(user=alice, prompt="a", seed=1, **FAST), generation_create(user=bob, prompt="b", seed=2,
                                                                                        **FAST)]
    run_worker("generate")
    assert not any("batched_with" in _done(job).counters for job in jobs)
