"""A tiny, randomly initialised Stable Diffusion pipeline for tests, demos and benchmarks.

It has the real SD1.5 (or SDXL) architecture at a size that trains and generates in well under a second
on a CPU, and it is built entirely offline: the tokenizer's vocabulary is made in memory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

TinyKind = Literal["sd15", "sdxl"]

# A hidden size this small is enough for the pipeline to run end to end; the model is not meant to be good.
TEXT_HIDDEN = 32
TEXT_LAYERS = 5
TEXT_HEADS = 4
MAX_TOKENS = 77


def build_tiny_pipeline(out_dir: Path, *, seed: int = 0, kind: TinyKind = "sd15") -> Path:
    """Build the tiny pipeline and save it with save_pretrained into out_dir; return out_dir.

    The same seed gives bit-identical weights. The folder is written next to out_dir and renamed into
    place, so a crash never leaves a half-written model behind. An existing out_dir is replaced.
    """
    if kind not in ("sd15", "sdxl"):
        raise ValueError(f"kind must be 'sd15' or 'sdxl', not {kind!r}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    pipe = _build(seed=seed, kind=kind)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the model is meant to be readable like any folder
        pipe.save_pretrained(tmp, safe_serialization=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _build(*, seed: int, kind: TinyKind) -> Any:
    # torch and diffusers are heavy; only model-building code paths pay for them.
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    # fork_rng keeps the caller's global RNG untouched while we seed each component.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = _tiny_vae()
        torch.manual_seed(seed + 1)
        unet = _tiny_unet(kind)
        torch.manual_seed(seed + 2)
        text_encoder = _tiny_text_encoder(with_projection=False)
        if kind == "sd15":
            return StableDiffusionPipeline(
                vae=vae,
                text_encoder=text_encoder,
                tokenizer=tiny_tokenizer(),
                unet=unet,
                scheduler=_scheduler(kind),
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        torch.manual_seed(seed + 3)
        text_encoder_2 = _tiny_text_encoder(with_projection=True)
        return StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tiny_tokenizer(),
            tokenizer_2=tiny_tokenizer(),
            unet=unet,
            scheduler=_scheduler(kind),
            add_watermarker=False,
        )


def tiny_tokenizer() -> Any:
    """A byte-level CLIPTokenizer with no merges: every byte of the prompt is one token."""
    # transformers is heavy; the tokenizer is only needed when a model is built.
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in [*symbols, *(s + "</w>" for s in symbols), "<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(token, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_TOKENS)


def _tiny_vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )


def _tiny_unet(kind: TinyKind) -> Any:
    from diffusers import UNet2DConditionModel

    common: dict[str, Any] = {
        "sample_size": 32,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "norm_num_groups": 32,
    }
    if kind == "sd15":
        return UNet2DConditionModel(
            **common,
            # Attention sits at the lower resolution only: the same LoRA targets exist and CPU tests stay fast.
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_HIDDEN,
            attention_head_dim=8,
        )
    # SDXL conditions on both text encoders' hidden states side by side, plus the pooled text embedding
    # and six size/crop numbers, each embedded with addition_time_embed_dim channels.
    time_embed_dim = 8
    return UNet2DConditionModel(
        **common,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2 * TEXT_HIDDEN,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=6 * time_embed_dim + TEXT_HIDDEN,
    )


def _tiny_text_encoder(*, with_projection: bool) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=514,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=TEXT_HEADS,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=TEXT_HIDDEN,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
    )
    model_class = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return model_class(config)


def _scheduler(kind: TinyKind) -> Any:
    from diffusers import EulerDiscreteScheduler, PNDMScheduler

    # The noise schedules real SD1.5 and SDXL checkpoints ship with, so scheduler swaps behave as they would.
    common: dict[str, Any] = {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "steps_offset": 1,
    }
    if kind == "sd15":
        return PNDMScheduler(**common, skip_prk_steps=True, set_alpha_to_one=False)
    return EulerDiscreteScheduler(**common, timestep_spacing="leading")
