"""A tiny, randomly initialised Stable Diffusion pipeline for tests, demos and benchmarks.

It has the real architecture of its family (SD1.5, SD2.x, SDXL or Flux.1)
at a size that trains and generates in well under a second
on a CPU, and it is built entirely offline: the tokenizer's vocabulary is made in memory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

TinyKind = Literal["sd15", "sd2", "sdxl", "flux"]
TINY_KINDS = ("sd15", "sd2", "sdxl", "flux")

# A hidden size this small is enough for the pipeline to run end to end; the model is not meant to be good.
TEXT_HIDDEN = 32
# SDXL's second encoder is wider than its first (1280 vs 768). The tiny one keeps them different too: diffusers
# tells the two encoders of a single checkpoint apart by their width.
TEXT_HIDDEN_2 = 48
TEXT_LAYERS = 5
TEXT_HEADS = 4
MAX_TOKENS = 77


def build_tiny_pipeline(out_dir: Path, *, seed: int = 0, kind: TinyKind = "sd15") -> Path:
    """Build the tiny pipeline and save it with save_pretrained into out_dir; return out_dir.

    The same seed gives bit-identical weights. The folder is written next to out_dir and renamed into
    place, so a crash never leaves a half-written model behind. An existing out_dir is replaced.
    """
    if kind not in TINY_KINDS:
        raise ValueError(f"kind must be one of {', '.join(TINY_KINDS)}, not {kind!r}")
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

    if kind == "flux":
        return _build_flux(seed=seed)
    # fork_rng keeps the caller's global RNG untouched while we seed each component.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = _tiny_vae()
        torch.manual_seed(seed + 1)
        unet = _tiny_unet(kind)
        torch.manual_seed(seed + 2)
        text_encoder = _tiny_text_encoder(with_projection=False, open_clip=kind == "sd2")
        if kind in ("sd15", "sd2"):
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
    if kind in ("sd15", "sd2"):
        return UNet2DConditionModel(
            **common,
            # SD2's transformer blocks project with linear layers (SD1's with 1x1 convolutions).
            use_linear_projection=kind == "sd2",
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
        cross_attention_dim=TEXT_HIDDEN + TEXT_HIDDEN_2,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        projection_class_embeddings_input_dim=6 * time_embed_dim + TEXT_HIDDEN_2,
    )


def _tiny_text_encoder(*, with_projection: bool, open_clip: bool = False) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    hidden = TEXT_HIDDEN_2 if with_projection else TEXT_HIDDEN
    config = CLIPTextConfig(
        vocab_size=514,
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=TEXT_HEADS,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=hidden,
        # CLIP-L uses quick_gelu; OpenCLIP (SD2, SDXL's second encoder) uses gelu.
        hidden_act="gelu" if (with_projection or open_clip) else "quick_gelu",
        layer_norm_eps=1e-5,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
    )
    model_class = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return model_class(config)


def _scheduler(kind: TinyKind) -> Any:
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler

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
    if kind == "sd2":  # SD 2.1 768-v predicts the velocity, not the noise
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=False, prediction_type="v_prediction")
    return EulerDiscreteScheduler(**common, timestep_spacing="leading")


# --- Flux.1 ---------------------------------------------------------------------------------------------------

T5_HIDDEN = 32
FLUX_MAX_SEQUENCE = 64


def _build_flux(*, seed: int) -> Any:
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Flux's VAE has 16 latent channels and no quant convs; 4 keep the tiny one fast (the transformer packs
        # 2x2 latent patches, so its in_channels is 4 * latent channels).
        vae = AutoencoderKL(
            in_channels=3, out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(32, 64), layers_per_block=1, latent_channels=4, norm_num_groups=32, sample_size=64,
            use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611,
        )
        torch.manual_seed(seed + 1)
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
            num_attention_heads=2, joint_attention_dim=T5_HIDDEN, pooled_projection_dim=TEXT_HIDDEN,
            guidance_embeds=True, axes_dims_rope=(2, 2, 4),
        )
        torch.manual_seed(seed + 2)
        text_encoder = _tiny_text_encoder(with_projection=False)
        torch.manual_seed(seed + 3)
        text_encoder_2 = T5EncoderModel(T5Config(
            vocab_size=len(T5_PIECES), d_model=T5_HIDDEN, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, relative_attention_max_distance=32, feed_forward_proj="gated-gelu",
            dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        ))
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )
    return FluxPipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(),
        text_encoder_2=text_encoder_2, tokenizer_2=tiny_t5_tokenizer(), transformer=transformer,
    )


# T5's special pieces first (pad 0, eos 1, unk 2, as in T5), then every printable ASCII character.
T5_PIECES = ["<pad>", "</s>", "<unk>", "\u2581", *[chr(c) for c in range(33, 127)]]


def tiny_t5_tokenizer() -> Any:
    """A SentencePiece-style unigram T5 tokenizer over single characters, built in memory (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import T5TokenizerFast

    vocab = [(piece, 0.0 if index < 3 else -float(index)) for index, piece in enumerate(T5_PIECES)]
    backend = Tokenizer(models.Unigram(vocab, unk_id=2))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    special = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}  # T5's own names
    return T5TokenizerFast(tokenizer_object=backend, extra_ids=0, model_max_length=FLUX_MAX_SEQUENCE, **special)
