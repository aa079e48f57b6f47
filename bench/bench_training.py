"""Training benchmarks.

1. Steps/s of a training run through the job path (frozen dataset materialised, progress written to the
   row at a bounded rate, cancel checks, checkpoints at the default interval) against a bare diffusers +
   peft loop (bench/ml_baselines.py) on the same tiny model, images, batch size and resolution, measured
   alternately in the same run: > 1.0× (latents and text embeddings cached, the default). The same run with
   the cache off is measured too, so the row says how much caching gave. All exclude model loading and
   include their first step.
2. Where a CUDA GPU is available, the same on an SD1.5-shaped pipeline (real layer sizes, random weights,
   so every step costs what a real one does) at 512×512 in bf16, and on an SDXL-shaped one (the published SDXL
   base configs Imagineer ships for single files, random weights) at 1024×1024 in bf16.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from common import Result, setup_django

TARGET = 0.95  # the SD1.5-shaped GPU row
TINY_TARGET = 1.0  # the tiny row must beat the bare loop


def _pictures(folder: Path, count: int, size: int) -> list[tuple[Path, str]]:
    """Square pictures (so the run's bucketing and the bare loop's centre crop see the same pixels)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    dataset = []
    for i in range(count):
        small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        path = folder / f"{i:03d}.png"
        Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC).save(path)
        dataset.append((path, f"picture number {i}"))
    return dataset


def build_sd15_shaped(out_dir: Path) -> Path:
    """An SD1.5-shaped pipeline with random weights (the real UNet, VAE and text-encoder sizes), in bf16."""
    # Bench code, never served: it needs the model classes to make the folder.
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from training.ml.tiny import tiny_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=768, attention_head_dim=8,
        )
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, sample_size=512, layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=514, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu",
            bos_token_id=512, eos_token_id=513, pad_token_id=513,
        ))
    scheduler = PNDMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", skip_prk_steps=True, set_alpha_to_one=False,
                              steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.to(dtype=torch.bfloat16).save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def build_sdxl_shaped(out_dir: Path | None) -> Path | None:
    """SDXL base's published architecture (families/configs/sdxl) with random weights, saved in bf16.
    `out_dir` None builds it without saving (a check that the configs make the pipeline)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from training.ml.families.configs import config_folder

    folder = config_folder("sdxl")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        tokenizer_2=CLIPTokenizer.from_pretrained(folder / "tokenizer_2"), unet=unet,
        scheduler=EulerDiscreteScheduler.from_pretrained(folder, subfolder="scheduler"), add_watermarker=False)
    if out_dir is None:
        return None
    pipe.to(dtype=torch.bfloat16).save_pretrained(out_dir, safe_serialization=True)
    return out_dir


class _Setup:
    """A user, an album of the pictures and a registered base model in the benchmark's database."""

    def __init__(self, model_dir: Path, dataset: list[tuple[Path, str]], name: str, kind: str = "sd15") -> None:
        from django.contrib.auth import get_user_model

        from gallery.services import album_create, image_ingest
        from training.basemodels import base_model_register

        users = get_user_model()
        self.owner, _ = users.objects.get_or_create(username=f"bench-{name}")
        self.album = album_create(owner=self.owner, name=f"bench {name}")
        for path, _caption in dataset:
            image_ingest(owner=self.owner, data=path.read_bytes(), filename=path.name, source="upload",
                         album=self.album)
        self.model = base_model_register(name=f"bench-{name}", source=str(model_dir), kind=kind, upload=True)

    def run(self, **params) -> float:
        from imagineer.models import JobStatus
        from training.runs.jobs import run_training
        from training.runs.services import run_create

        run = run_create(owner=self.owner, album_ids=[self.album.pk], base_model=self.model, params=params,
                         enqueue=False)
        run_training(run.pk)
        run.refresh_from_db()
        if run.status != JobStatus.SUCCEEDED:
            raise RuntimeError(f"benchmark run failed: {run.error}")
        return float(run.steps_per_second or 0.0)


def _compare(setup: _Setup, model_dir: Path, dataset, *, steps: int, batch: int, resolution: int, rounds: int,
             mixed_precision: str) -> tuple[float, float, float]:
    """Best steps/s of ours (cached), ours with the cache off, and the bare loop, alternating the order."""
    from ml_baselines import bare_training_steps_per_second

    params = dict(steps=steps, batch_size=batch, resolution=resolution, rank=4, alpha=4.0, learning_rate=1e-4,
                  mixed_precision=mixed_precision, random_flip=False, center_crop=True, caption_dropout=0.0,
                  checkpoint_every=100, seed=0)

    def measure_bare() -> float:
        return bare_training_steps_per_second(model_dir, dataset, batch, steps, resolution=resolution, rank=4)

    best = {"ours": 0.0, "uncached": 0.0, "bare": 0.0}
    measures = {"ours": lambda: setup.run(**params), "uncached": lambda: setup.run(**params, cache=False),
                "bare": measure_bare}
    order = list(measures)
    for round_no in range(rounds):
        # Rotate the order every round so no side always runs on a warmer (or busier) machine.
        for name in order[round_no % 3:] + order[:round_no % 3]:
            best[name] = max(best[name], measures[name]())
    return best["ours"], best["uncached"], best["bare"]


def run(quick: bool) -> list[Result]:
    data_dir = setup_django()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    import torch

    from training.ml.tiny import build_tiny_pipeline

    results: list[Result] = []
    work = Path(tempfile.mkdtemp(prefix="bench-training-", dir=data_dir))
    tiny = build_tiny_pipeline(work / "tiny")
    dataset = _pictures(work / "tiny-data", 8, 32)
    # 32 px is the tiny model's native size; its short steps make any per-step overhead of ours show.
    steps, batch, resolution = (20, 4, 32) if quick else (150, 4, 32)
    setup = _Setup(tiny, dataset, "tiny")
    threads = torch.get_num_threads()
    ours, uncached, bare = _compare(setup, tiny, dataset, steps=steps, batch=batch, resolution=resolution,
                                    rounds=1 if quick else 3, mixed_precision="no")
    device = "cuda" if torch.cuda.is_available() else f"cpu ({threads} threads)"
    ratio = ours / bare if bare else float("nan")
    results.append(Result(
        "training", "run vs bare diffusers+peft loop, tiny model", ours, bare, "steps/s", ratio, f"> {TINY_TARGET}",
        ratio > TINY_TARGET,
        f"{device}; {steps} steps (a checkpoint every 100), batch {batch}, {resolution}px, rank 4, 8 images; "
        f"best of rotating rounds; latent + text-embedding cache on (default). Cache off: {uncached:.2f} steps/s "
        f"({uncached / bare:.2f}× the bare loop), so caching gave {ours / uncached:.2f}×",
    ))
    if not torch.cuda.is_available():
        for label in ("SD1.5-shaped 512px bf16", "SDXL-shaped 1024px bf16"):
            results.append(Result("training", f"run vs bare loop, {label}", float("nan"), float("nan"),
                                  "steps/s", float("nan"), f"≥ {TARGET}", None, "skipped: no CUDA GPU here"))
        return results
    sd15 = build_sd15_shaped(work / "sd15-shaped")
    big_data = _pictures(work / "sd15-data", 8, 512)
    setup = _Setup(sd15, big_data, "sd15")
    steps = 15 if quick else 60
    ours, uncached, bare = _compare(setup, sd15, big_data, steps=steps, batch=4, resolution=512,
                                    rounds=1 if quick else 2, mixed_precision="bf16")
    ratio = ours / bare if bare else float("nan")
    results.append(Result(
        "training", "run vs bare loop, SD1.5-shaped 512px bf16", ours, bare, "steps/s", ratio, f"≥ {TARGET}",
        ratio >= TARGET, f"{torch.cuda.get_device_name(0)}; {steps} steps, batch 4, rank 4, random weights; "
        f"cache off: {uncached:.2f} steps/s, caching gave {ours / uncached:.2f}×",
    ))
    sdxl = build_sdxl_shaped(work / "sdxl-shaped")
    xl_data = _pictures(work / "sdxl-data", 8, 1024)
    setup = _Setup(sdxl, xl_data, "sdxl", kind="sdxl")
    steps = 10 if quick else 40
    ours, uncached, bare = _compare(setup, sdxl, xl_data, steps=steps, batch=2, resolution=1024,
                                    rounds=1 if quick else 2, mixed_precision="bf16")
    ratio = ours / bare if bare else float("nan")
    results.append(Result(
        "training", "run vs bare loop, SDXL-shaped 1024px bf16", ours, bare, "steps/s", ratio, f"≥ {TARGET}",
        ratio >= TARGET, f"{torch.cuda.get_device_name(0)}; {steps} steps, batch 2, rank 4, random weights, gradient "
        f"checkpointing off; cache off: {uncached:.2f} steps/s, caching gave {ours / uncached:.2f}×",
    ))
    return results
