"""Generation through the real `generate` queue and a real warm worker, on the tiny model with real LoRAs."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from gallery.models import Image
from imagineer.jobs import get_queue, job_cancel, reap_stale_jobs
from imagineer.models import JobStatus
from imagineer.testing import stored_files
from training.generation import selectors
from training.generation.services import LoraChoice, generation_create, generation_rerun
from training.ml.a1111 import parse_a1111_parameters, read_png_parameters
from training.ml.pipelines import pipeline_cache
from training.models import GenerationJob, GenerationOutput, LoraModel
from training.tests.generation_fixtures import FAST, file_bytes, pixels

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("media_root")]


def _done(job) -> GenerationJob:
    job.refresh_from_db()
    return job


def _image(job) -> Image:
    images = selectors.job_images(_done(job))
    assert len(images) == 1, job.error
    return images[0]


def test_it_generates_through_the_queue_into_the_gallery_with_a1111_metadata(user, loras, run_worker):
    job = generation_create(user=user, prompt="a red square", negative_prompt="blurry, dark",
                            loras=[LoraChoice("style", 0.7), LoraChoice("early", 0.4)], seed=42, **FAST)
    run_worker("generate")

    job = _done(job)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.progress == 1.0 and job.step == job.total_steps == 2
    assert set(job.timings) >= {"queue_wait", "load", "denoise", "save", "total"}
    image = _image(job)
    assert (image.source, image.owner, image.is_public, image.width, image.height) == ("generated", user, False, 32, 32)
    assert image.source_detail["generation_job"] == job.pk and image.derivatives == "ready"
    output = GenerationOutput.objects.get(image=image)
    assert (output.job, output.index, output.seed) == (job, 0, 42)

    params = parse_a1111_parameters(read_png_parameters(file_bytes(image)))
    assert params["prompt"] == "a red square" and params["negative_prompt"] == "blurry, dark"
    assert params["loras"] == [("style", 0.7), ("early", 0.4)]
    assert (params["steps"], params["sampler"], params["scheduler"], params["cfg_scale"], params["seed"]) == (
        2, "Euler", "euler", 7.0, 42)
    assert (params["width"], params["height"], params["model"]) == (32, 32, "tiny")
    assert set(params["lora_hashes"]) == {"style", "early"}
    # The hash is the kohya file's (what A1111 and Civitai users hold), not the diffusers file's.
    from imagineer.artifacts import artifact_open
    from training.ml.a1111 import lora_hash

    style = LoraModel.objects.get(name="style")
    for key, expected in ((style.kohya_file, True), (style.diffusers_file, False)):
        with artifact_open(key) as fh, tempfile.NamedTemporaryFile(suffix=".safetensors") as tmp:
            tmp.write(fh.read())
            tmp.flush()
            assert (lora_hash(Path(tmp.name)) == params["lora_hashes"]["style"]) is expected


def test_a_batch_uses_seed_plus_n_and_records_each_image(user, base_model, run_worker):
    job = generation_create(user=user, prompt="two", seed=7, count=2, **FAST)
    run_worker("generate")

    images = selectors.job_images(_done(job))
    assert [o.seed for o in job.outputs.order_by("index")] == [7, 8] and len(images) == 2
    assert [parse_a1111_parameters(read_png_parameters(file_bytes(i)))["seed"] for i in images] == [7, 8]


def test_the_base_model_loads_once_per_worker_and_loras_switch_as_adapters(user, loras, run_worker):
    cache = pipeline_cache()
    cache.clear()
    key = loras["style"].base_model.cache_key
    before = cache.load_counts.get(key, 0)
    settings = [[], [LoraChoice("style", 1.0)], [LoraChoice("style", 0.0)], [LoraChoice("early"), LoraChoice("style")]]
    jobs = [generation_create(user=user, prompt="a red square", loras=chosen, seed=5, **FAST) for chosen in settings]
    run_worker("generate")

    jobs = [_done(job) for job in jobs]
    assert all(job.status == JobStatus.SUCCEEDED for job in jobs), [job.error for job in jobs]
    assert cache.load_counts[key] == before + 1
    assert [job.counters["model_was_warm"] for job in jobs] == [False, True, True, True]
    plain, full, zero, both = (pixels(_image(job)) for job in jobs)
    assert np.abs(zero - plain).max() <= 1, "weight 0 is the base model"
    assert np.abs(full - plain).max() > 8, "weight 1 changes the image"
    assert np.abs(both - full).max() > 0, "a second LoRA at once changes it again"


def test_the_same_seed_and_settings_reproduce_the_same_image(user, loras, run_worker):
    first = generation_create(user=user, prompt="a red square", loras=[LoraChoice("style", 0.5)], seed=99, **FAST)
    between = generation_create(user=user, prompt="a red square", loras=[LoraChoice("early", 1.0)], seed=99, **FAST)
    run_worker("generate")
    again = generation_rerun(user=user, job=_done(first))
    run_worker("generate")

    again = _done(again)
    assert again.status == JobStatus.SUCCEEDED, again.error
    original = _image(first)
    assert _image(between).pk != original.pk
    # Bit-identical bytes: the gallery hands back the image the first job made instead of storing a copy.
    assert _image(again).pk == original.pk
    assert again.counters["reused"] == 1 and not again.outputs.exists()
    assert GenerationOutput.objects.get(image=original).job == first, "the lineage stays with the first job"
    assert "identical to images you already had" in again.message


def test_a_running_generation_stops_between_denoising_steps_when_cancelled(user, base_model, run_worker, media_root):
    job = generation_create(user=user, prompt="a long one", seed=1, width=64, height=64, steps=150,
                            scheduler="euler")

    def cancel_when_running():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = GenerationJob.objects.get(pk=job.pk)
            if row.status == JobStatus.RUNNING and row.step >= 1:
                job_cancel(row)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=cancel_when_running)
    watcher.start()
    run_worker("generate")
    watcher.join()

    job = _done(job)
    assert job.status == JobStatus.CANCELLED
    assert 1 <= job.step < 150
    assert not GenerationOutput.objects.exists() and not Image.objects.exists()
    assert stored_files(media_root) == []


def test_a_queued_generation_cancelled_before_it_starts_never_runs(user, base_model, run_worker):
    doomed = generation_create(user=user, prompt="never", **FAST)
    kept = generation_create(user=user, prompt="kept", **FAST)
    assert job_cancel(doomed)
    run_worker("generate")

    assert _done(doomed).status == JobStatus.CANCELLED and not doomed.outputs.exists()
    assert _done(kept).status == JobStatus.SUCCEEDED


def test_one_users_burst_does_not_starve_the_others(user, other_user, make_user, base_model, run_worker):
    carol = make_user("carol")
    a = [generation_create(user=user, prompt=f"a{i}", **FAST) for i in range(4)]
    b = [generation_create(user=other_user, prompt=f"b{i}", **FAST) for i in range(2)]
    c = generation_create(user=carol, prompt="c0", **FAST)
    predicted = [job.pk for job in selectors.fair_order()]
    run_worker("generate")

    started = list(GenerationJob.objects.order_by("started_at", "pk").values_list("pk", "status"))
    assert {status for _, status in started} == {JobStatus.SUCCEEDED}
    order = [pk for pk, _ in started]
    assert order == [a[0].pk, b[0].pk, c.pk, a[1].pk, b[1].pk, a[2].pk, a[3].pk]
    assert order == predicted, "the positions shown were the real order"


def test_every_waiting_row_keeps_a_live_task_when_a_task_starts_another_row(user, other_user, base_model,
                                                                            run_worker, redis_conn, settings):
    settings.GENERATE_BATCH_MAX_IMAGES = 1  # one row per task here (batching: test_generation_batching.py)
    a1, a2 = (generation_create(user=user, prompt=f"a{i}", **FAST) for i in range(2))
    b1 = generation_create(user=other_user, prompt="b", **FAST)
    b1_task = _done(b1).rq_job_id
    run_worker("generate", max_jobs=2)  # a1's task starts a1; a2's task starts b1, the fairer row

    assert _done(a1).status == JobStatus.SUCCEEDED and _done(b1).status == JobStatus.SUCCEEDED
    a2 = _done(a2)
    assert a2.status == JobStatus.QUEUED and a2.rq_job_id == b1_task
    assert b1_task in get_queue("generate").job_ids
    assert reap_stale_jobs()["lost"] == 0
    run_worker("generate")
    assert _done(a2).status == JobStatus.SUCCEEDED


def test_a_missing_lora_file_fails_the_job_with_the_reason(user, loras, run_worker):
    from training.models import LoraModel

    LoraModel.objects.filter(pk=loras["style"].pk).update(diffusers_file="/nonexistent/gone.safetensors")
    job = generation_create(user=user, prompt="x", loras=[LoraChoice("style")], **FAST)
    run_worker("generate")

    job = _done(job)
    assert job.status == JobStatus.FAILED
    assert "Could not load the model" in job.error and "gone.safetensors" in job.error
    assert not Image.objects.exists()
