"""Batching across users: images/s of several users' requests in one denoising pass against one at a time.

Both sides run the same requests (different prompts and seeds, as from different users, in the same order) on
the same warm pipeline in this process, alternating round by round, medians. Ours: training.ml.batching's
generate_batch, what the generate worker runs for compatible queued jobs. Baseline: training.ml.generate's
generate per request, what the worker runs when batching is off (GENERATE_BATCH_MAX_IMAGES=1). Every batched
image is checked against its one-at-a-time twin (at most 2 levels apart).

CPU: the tiny model at 64×64. With a CUDA GPU: an SD1.5-shaped pipeline (random weights) at 512×512.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from common import Result, setup_django

USERS = ["a lighthouse on a cliff at dusk", "a (red:1.2) fox in the snow", "a bowl of fruit, oil painting",
         "a city street at night, [blurry]", "an astronaut riding a horse", "a watercolour of a harbour",
         "a macro photo of a beetle", "a castle in the clouds"]


def run(quick: bool = False) -> list[Result]:
    data_dir = setup_django()
    import torch
    from bench_generation import _build_sd15_shaped

    from training.ml.batching import BatchItem, generate_batch
    from training.ml.generate import generate
    from training.ml.pipelines import load_pipeline
    from training.ml.tiny import build_tiny_pipeline

    gpu = torch.cuda.is_available()
    if gpu:
        model = _build_sd15_shaped(data_dir / "models" / "sd15-shaped")
        side, steps, rounds, label = 512, 20, (2 if quick else 5), "SD1.5-shaped"
    else:
        model = build_tiny_pipeline(data_dir / "models" / "tiny-sd15")
        side, steps, rounds, label = 64, (10 if quick else 20), (3 if quick else 7), "tiny"
    n = 4 if quick else len(USERS)
    pipe = load_pipeline(str(model), kind="sd15", source_type="folder")
    settings = {"scheduler": "euler", "steps": steps, "guidance_scale": 7.0, "width": side, "height": side}
    items = [BatchItem(prompt, seed=100 + i) for i, prompt in enumerate(USERS[:n])]

    def one_at_a_time():
        return [generate(pipe, prompt=item.prompt, seed=item.seed, **settings)[0] for item in items]

    def batched():
        return [images[0] for images in generate_batch(pipe, items, **settings, max_images=n)]

    def sync():
        if gpu:
            torch.cuda.synchronize()

    one_at_a_time(), batched()  # warm both paths
    ours, base, worst = [], [], 0
    for _ in range(rounds):
        sync()
        start = time.perf_counter()
        alone = one_at_a_time()
        sync()
        base.append(n / (time.perf_counter() - start))
        start = time.perf_counter()
        together = batched()
        sync()
        ours.append(n / (time.perf_counter() - start))
        worst = max(worst, max(int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())
                               for a, b in zip(alone, together, strict=True)))
    ours_m, base_m = statistics.median(ours), statistics.median(base)
    device = "cuda" if gpu else "cpu"
    return [Result(
        "generation", f"images/s, {n} users' requests batched vs one at a time ({label}, {side}×{side}, {steps} "
        f"steps, euler, CFG 7, {device})", ours_m, base_m, "images/s", ours_m / base_m, "record; same images",
        worst <= 2,
        f"median of {rounds} alternating rounds; one pass of {n} images vs {n} passes; largest pixel difference "
        f"between a batched image and its one-at-a-time twin: {worst} levels")]


if __name__ == "__main__":
    for result in run(quick=True):
        print(result)
