"""Per-user limits and the cost ceiling for training runs, and the fair (round robin by user) train queue."""

from __future__ import annotations

import pytest

from imagineer import fairqueue
from imagineer.jobs import get_queue, job_cancel, reap_stale_jobs
from imagineer.models import JobStatus, UserLimits
from imagineer.quotas import QuotaExceeded
from imagineer.services import api_token_create
from training.models import TrainingRun
from training.runs import services
from training.runs.params import RunInputError

pytestmark = pytest.mark.usefixtures("media_root", "training_dirs")

SMALL = {"steps": 20, "rank": 4, "resolution": 64}
FORM = {"base_model": "tiny", "steps": "20", "batch_size": "1", "learning_rate": "0.0001", "rank": "4", "alpha": "4",
        "resolution": "", "seed": "3", "mixed_precision": "no", "checkpoint_every": "10", "sample_every": "0"}


def _create(owner, album, **params):
    return services.run_create(owner=owner, album_ids=[album.pk], params={**SMALL, **params})


@pytest.fixture
def limit(settings):
    def set_to(n: int) -> None:
        settings.MAX_ACTIVE_TRAINING_PER_USER = n

    return set_to


def test_a_user_at_the_limit_cannot_queue_another_run_and_nothing_is_created(
    user, other_user, run_album, make_run_album, unloaded_model, limit, redis_conn
):
    limit(2)
    shapes, _ = run_album
    first, second = _create(user, shapes), _create(user, shapes)

    with pytest.raises(QuotaExceeded, match=r"already have 2 training runs waiting or running \(the limit is 2\)"):
        _create(user, shapes)
    assert TrainingRun.objects.filter(owner=user).count() == 2

    theirs, _ = make_run_album(other_user, "Theirs")
    _create(other_user, theirs)  # the limit is per user
    TrainingRun.objects.filter(pk=first.pk).update(status=JobStatus.RUNNING)
    with pytest.raises(QuotaExceeded):  # running runs count as well as queued ones
        _create(user, shapes)
    TrainingRun.objects.filter(pk=second.pk).update(status=JobStatus.SUCCEEDED)
    _create(user, shapes)  # finished runs do not


def test_staff_are_limited_too(staff_user, make_run_album, unloaded_model, limit, redis_conn):
    limit(1)
    album, _ = make_run_album(staff_user, "Staff")
    _create(staff_user, album)
    with pytest.raises(QuotaExceeded, match="the limit is 1"):
        _create(staff_user, album)


def test_resuming_a_run_counts_against_the_limit(user, run_album, unloaded_model, limit, redis_conn):
    limit(1)
    shapes, _ = run_album
    stopped = _create(user, shapes)
    job_cancel(stopped)
    _create(user, shapes)

    with pytest.raises(QuotaExceeded, match="the limit is 1"):
        services.run_resume(run=stopped)
    stopped.refresh_from_db()
    assert stopped.status == JobStatus.CANCELLED


def test_the_create_page_explains_the_limit_and_creates_nothing(user_client, user, run_album, unloaded_model, limit,
                                                                 redis_conn):
    limit(1)
    shapes, _ = run_album
    _create(user, shapes)
    response = user_client.post("/training/runs/new/", {**FORM, "albums": [shapes.pk]})

    assert response.status_code == 429
    assert "You already have 1 training run waiting or running (the limit is 1)" in response.content.decode()
    assert TrainingRun.objects.count() == 1


def test_the_resume_button_explains_the_limit(user_client, user, run_album, unloaded_model, limit, redis_conn):
    limit(1)
    shapes, _ = run_album
    stopped = _create(user, shapes)
    job_cancel(stopped)
    _create(user, shapes)
    response = user_client.post(f"/training/runs/{stopped.pk}/resume/", follow=True)

    assert response.status_code == 200 and "the limit is 1" in response.content.decode()
    stopped.refresh_from_db()
    assert stopped.status == JobStatus.CANCELLED


def test_the_api_answers_429_with_the_reason(client, user, run_album, unloaded_model, limit, redis_conn):
    limit(1)
    shapes, _ = run_album
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, name='t')[1]}"}
    body = {"album_ids": [shapes.pk], **SMALL}
    assert client.post("/api/training/runs", body, content_type="application/json", **auth).status_code == 201
    response = client.post("/api/training/runs", body, content_type="application/json", **auth)

    assert response.status_code == 429
    assert "the limit is 1" in response.json()["detail"]
    assert TrainingRun.objects.count() == 1


def test_staff_raise_one_users_limit_in_the_admin(staff_client, user, other_user, run_album, make_run_album,
                                                  unloaded_model, limit, redis_conn):
    limit(1)
    shapes, _ = run_album
    theirs, _ = make_run_album(other_user, "Theirs")
    _create(user, shapes)
    form = staff_client.get("/admin/imagineer/userlimits/add/").content.decode()
    assert "The site default is 1 (IMAGINEER_MAX_ACTIVE_TRAINING)" in form

    response = staff_client.post("/admin/imagineer/userlimits/add/", {
        "user": user.pk, "max_active_training": "3", "max_active_labeling": "", "max_active_scraping": "",
        "max_active_generation": "", "note": "deadline this week",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    assert UserLimits.objects.get(user=user).max_active_training == 3
    _create(user, shapes)
    _create(user, shapes)
    with pytest.raises(QuotaExceeded, match="already have 3 training runs .*the limit is 3"):
        _create(user, shapes)
    _create(other_user, theirs)
    with pytest.raises(QuotaExceeded, match="the limit is 1"):  # everyone else keeps the default
        _create(other_user, theirs)


def test_a_limit_of_zero_says_the_account_may_not_train(user, run_album, unloaded_model, redis_conn):
    UserLimits.objects.create(user=user, max_active_training=0)
    shapes, _ = run_album
    with pytest.raises(QuotaExceeded, match="may not start training runs"):
        _create(user, shapes)


# -- the cost ceiling -----------------------------------------------------------------------------------------

def test_a_run_bigger_than_the_ceiling_is_refused_naming_the_field(client, user, run_album, unloaded_model):
    shapes, _ = run_album
    # The example: 100,000 steps at batch 64, rank 256, resolution 2048.
    with pytest.raises(RunInputError) as huge:
        _create(user, shapes, steps=100_000, batch_size=64, rank=256, resolution=2048)
    assert "megapixels per step" in huge.value.errors["batch_size"][0]
    with pytest.raises(RunInputError) as long:
        _create(user, shapes, steps=100_000, batch_size=4, resolution=1024)
    assert "million pixels to train on" in long.value.errors["steps"][0]

    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, name='t')[1]}"}
    response = client.post("/api/training/runs", {"album_ids": [shapes.pk], "steps": 100_000, "batch_size": 64,
                                                  "resolution": 2048}, content_type="application/json", **auth)
    assert response.status_code == 422
    assert [e["loc"][-1] for e in response.json()["detail"]] == ["batch_size"]
    assert not TrainingRun.objects.exists()


def test_the_create_page_shows_the_ceiling_next_to_the_field(user_client, run_album, unloaded_model):
    shapes, _ = run_album
    response = user_client.post("/training/runs/new/", {**FORM, "albums": [shapes.pk], "steps": "100000",
                                                        "batch_size": "4", "resolution": "1024"})
    assert response.status_code == 400
    assert "million pixels to train on" in response.content.decode()
    assert not TrainingRun.objects.exists()


# -- the fair train queue -------------------------------------------------------------------------------------

def test_the_train_queue_takes_users_in_turn(user, other_user, other_client, run_album, make_run_album,
                                             unloaded_model, limit, run_worker):
    """alice queues three runs, then bob one: bob's run starts second, not fourth."""
    limit(3)
    shapes, _ = run_album
    theirs, _ = make_run_album(other_user, "Theirs")
    a = [_create(user, shapes) for _ in range(3)]
    b = _create(other_user, theirs)
    predicted = [run.pk for run in fairqueue.fair_order(TrainingRun)]
    assert predicted == [a[0].pk, b.pk, a[1].pk, a[2].pk]
    assert fairqueue.queue_position(b) == 2
    assert "position 2" in other_client.get(f"/training/runs/{b.pk}/").content.decode()

    # The base model does not exist, so each run fails at once: the order they started in is what counts.
    run_worker("train")
    started = list(TrainingRun.objects.order_by("started_at", "pk").values_list("pk", "status"))
    assert [pk for pk, _ in started] == predicted
    assert {status for _, status in started} == {JobStatus.FAILED}


def test_every_waiting_run_keeps_a_live_task_when_a_task_starts_another_run(
    user, other_user, run_album, make_run_album, unloaded_model, limit, run_worker
):
    limit(3)
    shapes, _ = run_album
    theirs, _ = make_run_album(other_user, "Theirs")
    a1, a2 = _create(user, shapes), _create(user, shapes)
    b1 = _create(other_user, theirs)
    b1_task = TrainingRun.objects.get(pk=b1.pk).rq_job_id
    run_worker("train", max_jobs=2)  # a1's task starts a1; a2's task starts b1, the fairer run

    a2.refresh_from_db()
    assert TrainingRun.objects.get(pk=a1.pk).started_at and TrainingRun.objects.get(pk=b1.pk).started_at
    assert a2.status == JobStatus.QUEUED and a2.rq_job_id == b1_task
    assert b1_task in get_queue("train").job_ids
    assert reap_stale_jobs()["lost"] == 0
    run_worker("train")
    a2.refresh_from_db()
    assert a2.status == JobStatus.FAILED and a2.started_at is not None
