"""Bare diffusers + peft baselines that benchmarks run next to Imagineer's job path in the same process.

They do the least work that produces the same result: no checkpoints, no callbacks, no buckets, no
cache. A benchmark reports our numbers as a ratio to these, so machine speed cancels out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _device_and_dtype() -> tuple[str, Any]:
    # torch is imported lazily like everywhere else in the project, though bench is never served.
    import torch

    if torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return "cpu", torch.float32


def _load(model_dir: Path) -> tuple[Any, str, Any]:
    import diffusers

    device, dtype = _device_and_dtype()
    class_name = json.loads((Path(model_dir) / "model_index.json").read_text())["_class_name"]
    pipe = getattr(diffusers, class_name).from_pretrained(str(model_dir), dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, device, dtype


def _load_images(dataset: Sequence[tuple[Path, str]], resolution: int) -> tuple[Any, list[str]]:
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    tensors, captions = [], []
    for path, caption in dataset:
        with Image.open(path) as raw:
            img = ImageOps.fit(raw.convert("RGB"), (resolution, resolution), Image.Resampling.BICUBIC)
        tensors.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1))
        captions.append(caption)
    return torch.stack(tensors), captions


def _conditioning(pipe: Any, prompts: list[str], device: str, resolution: int) -> tuple[Any, Any]:
    import torch

    if not hasattr(pipe, "text_encoder_2"):
        return pipe.encode_prompt(prompts, device, 1, False)[0], None
    embeds, _, pooled, _ = pipe.encode_prompt(
        prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
    )
    sizes = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]] * len(prompts), device=device)
    return embeds, {"text_embeds": pooled, "time_ids": sizes.to(embeds.dtype)}


def bare_training_steps_per_second(
    model_dir: Path,
    dataset: Sequence[tuple[Path, str]],
    batch_size: int,
    steps: int,
    *,
    resolution: int = 512,
    rank: int = 4,
    learning_rate: float = 1e-4,
) -> float:
    """Optimizer steps per second of a minimal LoRA loop (UNet attention LoRA, MSE on epsilon or v)."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from diffusers import DDPMScheduler
    from peft import LoraConfig

    pipe, device, dtype = _load(model_dir)
    for name in ("vae", "text_encoder", "text_encoder_2", "unet"):
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).requires_grad_(False)
    targets = ["to_k", "to_q", "to_v", "to_out.0"]
    pipe.unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=targets))
    params = [p for p in pipe.unet.parameters() if p.requires_grad]
    for param in params:
        param.data = param.data.float()
    optimizer = torch.optim.AdamW(params, lr=learning_rate)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    images, captions = _load_images(dataset, resolution)
    started = time.perf_counter()
    for step in range(steps):
        index = [(step * batch_size + i) % len(captions) for i in range(batch_size)]
        with torch.no_grad():
            pixels = images[index].to(device, dtype=pipe.vae.dtype)
            latents = (pipe.vae.encode(pixels).latent_dist.sample() * pipe.vae.config.scaling_factor).to(dtype)
            text, added = _conditioning(pipe, [captions[i] for i in index], device, resolution)
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(index),), device=device)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        epsilon = noise_scheduler.config.prediction_type == "epsilon"
        target = noise if epsilon else noise_scheduler.get_velocity(latents, noise, timesteps)
        with torch.autocast(device, dtype=dtype, enabled=device == "cuda"):
            pred = pipe.unet(noisy, timesteps, text, added_cond_kwargs=added, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), target.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - started)


def bare_generation_seconds(model_dir: Path, prompt: str, steps: int, width: int, height: int) -> float:
    """Seconds for one warm plain pipeline call (a first call warms kernels and caches)."""
    import torch

    pipe, device, _ = _load(model_dir)
    kwargs = {"prompt": prompt, "num_inference_steps": steps, "width": width, "height": height}
    pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(0))
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    pipe(**kwargs, generator=torch.Generator("cpu").manual_seed(1))
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started
