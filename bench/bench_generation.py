"""Generation benchmark: the full queue path against a bare diffusers call, in the same process and run.

Ours: `generation_create` (validation, row, Redis) → the `generate` queue → a warm `manage.py rqworker` process
with imagineer.worker.WarmWorker (fair claim, cached pipeline, LoRA switch, denoise with progress/cancel checks,
PNG with A1111 metadata, gallery ingest with thumbnails), timed until the job row says the images are stored.
Baseline: the same model, loaded once in this process with plain diffusers, called with the same prompt, steps,
size, scheduler and guidance. Target: ours takes at most 10% longer per image, and the worker loads the base
model once, not per job. The two sides alternate image by image and report medians, so a busy neighbour on the
machine hurts both alike.

On a CPU the tiny model stands in; with a CUDA GPU an SD1.5-shaped pipeline (random weights, the real UNet/VAE/
text-encoder sizes) runs at 512×512, 20 steps, batch 1 and 4, and images/s are recorded.

Scaling: images/s of two warm generate workers (two rqworker processes on the one queue) against one, a batch
of jobs queued at once, alternating rounds in the same run; every job must run exactly once. Both workers share
this machine's one device, so the ratio shows what sharing the queue costs, not what a second GPU would add.
"""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Result, setup_django

PROMPT = "a lighthouse on a cliff at dusk, oil painting"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _build_sd15_shaped(out_dir: Path) -> Path:
    """An SD1.5-sized pipeline with random weights (no download): 860M-parameter UNet, SD VAE, 12-layer CLIP."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from training.ml.tiny import tiny_tokenizer

    if (out_dir / "model_index.json").is_file():
        return out_dir
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        sample_size=512)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=514, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, max_position_embeddings=77, bos_token_id=512,
                                        eos_token_id=513, pad_token_id=513, hidden_act="quick_gelu"))
    scheduler = PNDMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, steps_offset=1,
                              beta_schedule="scaled_linear", skip_prk_steps=True, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tiny_tokenizer(), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.to(torch.float16).save_pretrained(out_dir, safe_serialization=True)
    return out_dir


class _Bare:
    """The baseline: plain diffusers, the same dtype and device, the same scheduler class and settings."""

    def __init__(self, model_dir: Path):
        import diffusers
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if device == "cuda" \
            else torch.float32
        self.device = device
        self.pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(model_dir), dtype=dtype,
                                                                      safety_checker=None).to(device)
        self.pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(self.pipe.scheduler.config,
                                                                           use_karras_sigmas=False)
        self.pipe.set_progress_bar_config(disable=True)

    def seconds(self, *, n: int, steps: int, side: int, count: int = 1) -> float:
        import torch

        started = time.perf_counter()
        for i in range(n):
            self.pipe(prompt=PROMPT, num_inference_steps=steps, guidance_scale=7.0, width=side, height=side,
                      num_images_per_prompt=count,
                      generator=[torch.Generator("cpu").manual_seed(1000 * i + k) for k in range(count)])
        if self.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started


class _Worker:
    """The real deployment path: `manage.py rqworker generate --worker-class imagineer.worker.WarmWorker`."""

    def __init__(self, name: str = "bench-gpu-1"):
        from django.conf import settings

        from imagineer.jobs import queue_name

        # The test settings give this run its own queue prefix (in the environment, so the worker shares it).
        self.name = settings.REDIS_PREFIX + name
        env = {**os.environ, "IMAGINEER_DATA_DIR": str(settings.DATA_DIR), "REDIS_URL": settings.REDIS_URL,
               "IMAGINEER_REDIS_PREFIX": settings.REDIS_PREFIX,
               "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "imagineer.settings.test")}
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-generate-{name}-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "rqworker", queue_name("generate"), "--worker-class",
             "imagineer.worker.WarmWorker", "--name", self.name],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _ours_seconds(owner, worker: _Worker, *, steps: int, side: int, count: int = 1, seed: int = 0,
                  timeout: float = 900) -> tuple[float, int]:
    """Seconds from the service call until the warm worker has stored the images; returns (seconds, job id)."""
    from imagineer.models import JobStatus
    from training.generation.services import generation_create
    from training.models import GenerationJob

    started = time.perf_counter()
    job = generation_create(user=owner, prompt=PROMPT, scheduler="euler", steps=steps, guidance_scale=7.0,
                            width=side, height=side, count=count, seed=seed)
    rows = GenerationJob.objects.filter(pk=job.pk)
    while True:
        status, error = rows.values_list("status", "error").get()
        if status not in (JobStatus.QUEUED, JobStatus.RUNNING):
            break
        if worker.process.poll() is not None or time.perf_counter() - started > timeout:
            raise RuntimeError(f"the generate worker stopped or timed out; its log: {worker.log.name}")
        # Each poll is a query in this process; polling faster steals CPU from the worker on a small machine.
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    if status != JobStatus.SUCCEEDED:
        raise RuntimeError(f"generation {job.pk} ended {status}: {error}")
    return elapsed, job.pk


def _ran_on(job_ids) -> dict[int, str]:
    """{generation row id: name of the worker that ran it} (the row keeps the RQ task that ran it)."""
    from rq.job import Job as RQJob

    from imagineer.jobs import get_redis
    from training.models import GenerationJob

    tasks = dict(GenerationJob.objects.filter(pk__in=job_ids).values_list("pk", "rq_job_id"))
    return {pk: RQJob.fetch(task, connection=get_redis()).worker_name for pk, task in tasks.items()}


def _batch_seconds(owner, workers: list[_Worker], *, n: int, steps: int, side: int, seed0: int,
                   timeout: float = 1800) -> tuple[float, list[int]]:
    """Queue n jobs at once and time until every one is stored (images/s of the whole pool of workers)."""
    from imagineer.models import JobStatus
    from training.generation.services import generation_create
    from training.models import GenerationJob

    started = time.perf_counter()
    ids = [generation_create(user=owner, prompt=PROMPT, scheduler="euler", steps=steps, guidance_scale=7.0,
                             width=side, height=side, seed=seed0 + i).pk for i in range(n)]
    rows = GenerationJob.objects.filter(pk__in=ids)
    while rows.filter(status__in=(JobStatus.QUEUED, JobStatus.RUNNING)).exists():
        if any(w.process.poll() is not None for w in workers) or time.perf_counter() - started > timeout:
            logs = ", ".join(w.log.name for w in workers)
            raise RuntimeError(f"a generate worker stopped or timed out; logs: {logs}")
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    failed = list(rows.exclude(status=JobStatus.SUCCEEDED).values_list("pk", "error"))
    if failed:
        raise RuntimeError(f"generations failed: {failed}")
    return elapsed, ids


def _warm_second_worker(owner, first: _Worker, *, steps: int, side: int, seed0: int) -> _Worker:
    """Start another generate worker and wait until it has run a job (its pipeline is loaded)."""
    from rq import Worker

    from imagineer.jobs import get_queue

    second = _Worker("bench-gpu-2")
    deadline = time.perf_counter() + 600
    while second.name not in {w.name for w in Worker.all(queue=get_queue("generate"))}:  # listening yet?
        if second.process.poll() is not None or time.perf_counter() > deadline:
            raise RuntimeError(f"the second generate worker did not start; its log: {second.log.name}")
        time.sleep(0.1)
    for attempt in range(20):
        # Two jobs at once: while the first worker runs one, the idle second worker takes the other.
        _, ids = _batch_seconds(owner, [first, second], n=2, steps=steps, side=side, seed0=seed0 + 10 * attempt)
        if second.name in _ran_on(ids).values():
            return second
    second.stop()
    raise RuntimeError(f"the second generate worker never took a job; its log: {second.log.name}")


def _scaling(owner, first: _Worker, *, rounds: int, n: int, steps: int, side: int):
    """images/s of one warm generate worker, then two, on one queue; alternated `rounds` times, medians."""
    from training.models import GenerationJob

    one_s, two_s, two_ids = [], [], []
    for r in range(rounds):
        seconds, _ = _batch_seconds(owner, [first], n=n, steps=steps, side=side, seed0=100_000 + 1000 * r)
        one_s.append(n / seconds)
        second = _warm_second_worker(owner, first, steps=steps, side=side, seed0=200_000 + 1000 * r)
        try:
            seconds, ids = _batch_seconds(owner, [first, second], n=n, steps=steps, side=side,
                                          seed0=300_000 + 1000 * r)
            ran_on = _ran_on(ids)
        finally:
            second.stop()
        two_s.append(n / seconds)
        two_ids += ids
        if set(ran_on.values()) != {first.name, second.name}:
            raise RuntimeError(f"one worker ran the whole batch: {ran_on}")
    attempts = list(GenerationJob.objects.filter(pk__in=two_ids).values_list("attempts", flat=True))
    return statistics.median(two_s), statistics.median(one_s), all(a == 1 for a in attempts), len(two_ids)


def _setup():
    data_dir = setup_django()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from imagineer.jobs import ensure_queue_available

    # run_syncdb: the test settings' job-plumbing app has no migrations, and the worker's reaper reads its table.
    call_command("migrate", verbosity=0, run_syncdb=True)
    ensure_queue_available()
    logging.getLogger("rq.worker").setLevel(logging.WARNING)
    settings.GENERATE_MAX_QUEUED_PER_USER = 1000
    users = get_user_model().objects
    owner = users.filter(username="bench-gen").first() or users.create_user("bench-gen", "bench-gen@example.com", "x")
    return Path(settings.DATA_DIR or data_dir), owner


def _register(name: str, model_dir: Path):
    # Stored once, as on a real installation: the worker reads it from storage through its own cache.
    from training.basemodels import base_model_register

    return base_model_register(name=name, source=str(model_dir), kind="sd15", upload=True)


def _measure(owner, worker, bare, *, n: int, steps: int, side: int, count: int = 1, seed0: int = 0):
    """Alternate one bare call and one queued job n times, so load on the machine hits both alike; medians."""
    ours_s, bare_s, jobs = [], [], []
    for i in range(n):
        bare_s.append(bare.seconds(n=1, steps=steps, side=side, count=count) / count)
        seconds, job_id = _ours_seconds(owner, worker, steps=steps, side=side, count=count, seed=seed0 + 1000 * i)
        ours_s.append(seconds / count)
        jobs.append(job_id)
    return statistics.median(ours_s), statistics.median(bare_s), jobs


def run(quick: bool = False) -> list[Result]:
    data_dir, owner = _setup()
    from training.models import BaseModel, GenerationJob

    gpu = _cuda()
    if gpu:
        model_dir = _build_sd15_shaped(data_dir / "models" / "sd15-shaped")
        side, steps, n, label = 512, 20, (3 if quick else 10), "SD1.5-shaped UNet"
    else:
        from training.ml.tiny import build_tiny_pipeline

        model_dir = build_tiny_pipeline(data_dir / "models" / "tiny-sd15")
        side, steps, n, label = 64, (10 if quick else 30), (3 if quick else 9), "tiny"
    base = _register(f"bench-{label.split()[0].lower()}", model_dir)
    BaseModel.objects.exclude(pk=base.pk).update(is_default=False)
    BaseModel.objects.filter(pk=base.pk).update(is_default=True)

    bare = _Bare(model_dir)
    worker = _Worker()
    try:
        bare.seconds(n=1, steps=steps, side=side)  # warm kernels and caches on both sides first
        _, first_job = _ours_seconds(owner, worker, steps=steps, side=side, seed=7)
        ours, baseline, jobs = _measure(owner, worker, bare, n=n, steps=steps, side=side)
        jobs.append(first_job)
        batch4 = None
        if gpu:
            batch4 = _measure(owner, worker, bare, n=max(2, n // 2), steps=steps, side=side, count=4, seed0=50)
            jobs += batch4[2]
        del bare  # frees its copy of the model before a second worker loads one
        scale_rounds, scale_n = (1, 6) if quick else (3, 12 if gpu else 16)
        two, one, once, scale_jobs = _scaling(owner, worker, rounds=scale_rounds, n=scale_n, steps=steps, side=side)
    finally:
        worker.stop()
    device = "cuda" if gpu else "cpu"
    ratio = baseline / ours
    settings_text = f"{label}, {side}×{side}, {steps} steps, euler, CFG 7, batch 1, {device}"
    results = [
        Result("generation", f"per-image wall time through the queue ({settings_text})", ours, baseline,
               "s/image", ratio, "≥ 0.91 (overhead ≤ 10%)", ratio >= 1 / 1.1,
               f"median of {n}, alternating; overhead {(ours / baseline - 1) * 100:+.1f}%; ours = service call to "
               "stored image: validation, row, Redis, rqworker WarmWorker, fair claim, PNG metadata, gallery ingest "
               "with thumbnails"),
    ]
    if batch4 is not None:
        ratio4 = batch4[1] / batch4[0]
        results += [
            Result("generation", "images/s, batch 1, 512×512, 20 steps (SD1.5-shaped)", 1 / ours, 1 / baseline,
                   "images/s", ratio, "record", None, settings_text),
            Result("generation", "images/s, batch 4, 512×512, 20 steps (SD1.5-shaped)", 1 / batch4[0],
                   1 / batch4[1], "images/s", ratio4, "≥ 0.91 (overhead ≤ 10%)", ratio4 >= 1 / 1.1,
                   "count=4 in one job vs num_images_per_prompt=4"),
        ]
    else:
        results.append(Result("generation", "images/s at 512×512, 20 steps, batch 1 and 4 (SD1.5-shaped)",
                              float("nan"), float("nan"), "images/s", float("nan"), "record", None,
                              "skipped: no CUDA GPU on this machine"))
    scale_ratio = two / one
    results.append(Result(
        "generation", f"images/s, two generate workers vs one, one queue ({label}, {side}×{side}, {steps} steps, "
        f"{device})", two, one, "images/s", scale_ratio, "record; every job runs once", None if once else False,
        f"median of {scale_rounds} alternating rounds of {scale_n} jobs queued at once; baseline one warm worker; "
        f"both workers share this machine's {'GPU' if gpu else f'{os.cpu_count()} CPU cores'}, so this shows "
        f"queue and claim overhead, not the gain of a second device; {scale_jobs} jobs on two workers, "
        f"{'each ran exactly once' if once else 'SOME RAN TWICE'}"))
    timings = list(GenerationJob.objects.filter(pk__in=jobs[:n]).values_list("timings", flat=True))
    parts = {key: statistics.median(t.get(key, 0) for t in timings) for key in ("load", "denoise", "save")}
    results[0].notes += ("; worker medians: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in parts.items()))
    results[0].extra.update(parts)
    cold = [c.get("model_was_warm") for c in GenerationJob.objects.filter(pk__in=jobs).values_list("counters",
                                                                                                  flat=True)]
    loads = cold.count(False)
    results.append(Result("generation", "base model loads per warm worker", loads, 1, "loads", 1 / max(1, loads),
                          "= 1", loads == 1, f"{len(jobs)} jobs through one rqworker process"))
    return results


if __name__ == "__main__":
    for result in run(quick=True):
        print(result)
