"""Several generation requests (e.g. from different users) in one denoising pass.

Requests that share the pipeline settings (base model, LoRAs, size, steps, scheduler, CFG; text to image) differ
only in prompt, negative prompt, seed and count; those go along the batch dimension. Each image keeps its own
CPU generator (seed + i, as when the request runs alone), so every request gets the image it would get alone,
up to the last bit of float rounding a different batch size may bring.

Prompts are encoded per request with the A1111 syntax (prompt_weights); requests whose embeddings have different
lengths (a prompt longer than 75 tokens has more chunks) cannot share a tensor, so they run as separate passes.

A request cancelled mid-pass stops counting: its rows finish with the others (multistep schedulers keep
per-row history, so rows cannot be removed safely mid-pass) and its images are dropped. When every request in a
pass is cancelled, the pass stops before its next step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import GenerationCancelled


@dataclass
class BatchItem:
    prompt: str
    seed: int
    negative_prompt: str = ""
    count: int = 1
    should_stop: Callable[[], bool] | None = None


def generate_batch(
    pipe: Any,
    items: list[BatchItem],
    *,
    scheduler: str,
    steps: int,
    guidance_scale: float,
    width: int,
    height: int,
    on_step: Callable[[int, int], None] | None = None,
    max_images: int = 16,
) -> list[list[Any] | None]:
    """Images for each item, in order (None for an item cancelled on the way)."""
    import torch

    from .generate import set_scheduler, validate_generation_params
    from .prompt_weights import encode_prompts

    for item in items:
        validate_generation_params(prompt=item.prompt, negative_prompt=item.negative_prompt, scheduler=scheduler,
                                   steps=steps, guidance_scale=guidance_scale, seed=item.seed, width=width,
                                   height=height, count=item.count)
    results: list[list[Any] | None] = [None] * len(items)
    encoded = [encode_prompts(pipe, item.prompt, item.negative_prompt, repeat=item.count) for item in items]
    # Passes: items of equal embedding shape, in the given (fair) order, at most max_images images each.
    passes: list[list[int]] = []
    for index, kwargs in enumerate(encoded):
        shape = tuple(kwargs["prompt_embeds"].shape[1:])
        for group in passes:
            first = encoded[group[0]]
            if tuple(first["prompt_embeds"].shape[1:]) == shape and \
                    sum(items[i].count for i in group) + items[index].count <= max_images:
                group.append(index)
                break
        else:
            passes.append([index])

    for group in passes:
        live = [i for i in group if not (items[i].should_stop and items[i].should_stop())]
        if not live:
            continue
        stopped: set[int] = set()

        def step_end(pipeline: Any, index: int, _timestep: Any, tensors: dict[str, Any], live=live,
                     stopped=stopped) -> dict[str, Any]:
            total = int(getattr(pipeline, "num_timesteps", steps))
            if on_step:
                on_step(index + 1, total)
            for i in live:
                if i not in stopped and items[i].should_stop and items[i].should_stop():
                    stopped.add(i)
            if len(stopped) == len(live) and index + 1 < total:
                raise GenerationCancelled(index + 1, total)
            return tensors

        kwargs = {key: torch.cat([encoded[i][key] for i in live]) for key in encoded[live[0]]}
        generators = [torch.Generator("cpu").manual_seed(items[i].seed + n)
                      for i in live for n in range(items[i].count)]
        set_scheduler(pipe, scheduler)
        try:
            with torch.inference_mode():
                images = pipe(**kwargs, num_inference_steps=steps, guidance_scale=guidance_scale, width=width,
                              height=height, num_images_per_prompt=1, generator=generators,
                              callback_on_step_end=step_end).images
        except GenerationCancelled:
            continue
        offset = 0
        for i in live:
            count = items[i].count
            if i not in stopped:
                results[i] = list(images[offset:offset + count])
            offset += count
    return results
