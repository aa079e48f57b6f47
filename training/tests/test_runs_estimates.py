"""Duration estimates from the speed this installation's finished runs measured."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from imagineer.models import JobStatus
from training.models import TrainingRun
from training.runs import estimates, services

pytestmark = pytest.mark.usefixtures("media_root", "training_dirs")


@pytest.mark.parametrize("seconds, text", [
    (10, "less than a minute"), (70, "about a minute"), (200, "about 3 minutes"), (3600, "about 1 hour"),
    (3660, "about 1 hour 1 minute"), (2 * 3600 + 600, "about 2 hours 10 minutes"),
])
def test_durations_read_as_a_person_would_say_them(seconds, text):
    assert estimates.about(seconds) == text


def _finished(user, album, *, status=JobStatus.SUCCEEDED, speed=4.0, wall=100.0, **params):
    run = services.run_create(owner=user, album_ids=[album.pk], params={"steps": 100, **params}, enqueue=False)
    now = timezone.now()
    TrainingRun.objects.filter(pk=run.pk).update(status=status, step=100, steps_per_second=speed,
                                                 started_at=now - timedelta(seconds=wall), finished_at=now)
    return run


def test_only_finished_runs_of_the_same_model_and_size_count(user, run_album, unloaded_model):
    shapes, _ = run_album
    assert estimates.measured_speed(unloaded_model, 512, 1) is None
    _finished(user, shapes, status=JobStatus.FAILED, speed=99.0, resolution=512, batch_size=1)
    _finished(user, shapes, speed=50.0, resolution=256, batch_size=1)
    assert estimates.measured_speed(unloaded_model, 512, 1) is None
    for speed in (4.0, 5.0, 100.0):  # one odd run does not decide: the median does
        _finished(user, shapes, speed=speed, wall=30.0, resolution=512, batch_size=1)
    measured = estimates.measured_speed(unloaded_model, 512, 1)
    assert (measured.steps_per_second, measured.runs, measured.batch_size) == (5.0, 3, 1)
    assert measured.overhead_seconds == 10.0  # 30 s in all, 20 s of it training 100 steps at 5 steps/s
    # Runs with the batch size asked for win over others.
    _finished(user, shapes, speed=2.0, wall=60.0, resolution=512, batch_size=2)
    assert estimates.measured_speed(unloaded_model, 512, 2).steps_per_second == 2.0
    estimate = estimates.estimate(base_model=unloaded_model, resolution=512, steps=500, batch_size=4)
    assert estimate.steps_per_second == 1.25  # 5 steps/s at batch 1 (the commonest); each step is 4 times the work
    assert estimate.text == "about 7 minutes"  # 400 s + 10 s
    assert estimates.estimate(base_model=unloaded_model, resolution=512, steps=None, batch_size=1).text == ""
