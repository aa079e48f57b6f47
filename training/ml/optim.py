"""What a LoRA run trains and how: the module set that gets LoRA, the optimizer, and min-SNR loss weights.

Each choice is one function taking the config's value, so a model-family registry can later pick per family.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
# kohya sd-scripts' default: every Linear (and 1x1 Conv2d) inside a Transformer2DModel block.
KOHYA_EXTRA = ("ff.net.0.proj", "ff.net.2", "proj_in", "proj_out")
# LoCon adds the convolutions (and the time embedding projection) of ResNet blocks, downsamplers and upsamplers.
LOCON_PARENTS = ("resnets", "downsamplers", "upsamplers")
# kohya's text-encoder set: the CLIP attention and MLP linears.
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def unet_lora_targets(unet: Any, module_set: str) -> list[str]:
    """Full module names of the UNet layers that get LoRA for a module set (attention|kohya|locon)."""
    import torch

    if module_set not in ("attention", "kohya", "locon"):
        raise ValueError(f"Unknown LoRA module set {module_set!r}.")
    suffixes = ATTENTION if module_set == "attention" else ATTENTION + KOHYA_EXTRA
    names = []
    for name, module in unet.named_modules():
        if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        parts = name.split(".")
        in_transformer = "attentions" in parts
        if in_transformer and any(name.endswith("." + s) for s in suffixes):
            names.append(name)
        elif module_set == "locon" and not in_transformer and any(p in parts for p in LOCON_PARENTS):
            names.append(name)
    if not names:
        raise ValueError(f"The model has no layers for the LoRA module set {module_set!r}.")
    return names


def text_encoder_lora_targets(text_encoder: Any) -> list[str]:
    import torch

    names = [
        name
        for name, module in text_encoder.named_modules()
        if isinstance(module, torch.nn.Linear)
        and ".layers." in name
        and name.rsplit(".", 1)[-1] in TEXT_ENCODER_TARGETS
    ]
    if not names:
        raise ValueError("The text encoder has no attention or MLP layers to put LoRA on.")
    return names


def build_optimizer(name: str, groups: Sequence[dict[str, Any]], *, weight_decay: float, device: str) -> Any:
    """The optimizer over parameter groups ({"params": [...], "lr": x}); a clear ValueError when unavailable."""
    import torch

    groups = [dict(g) for g in groups]
    if name == "adamw":
        return torch.optim.AdamW(groups, weight_decay=weight_decay)
    if name == "adamw8bit":
        if not device.startswith("cuda"):
            raise ValueError(f"The AdamW 8-bit optimizer needs a CUDA GPU; this worker trains on {device}. "
                             "Choose AdamW instead.")
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ValueError("The AdamW 8-bit optimizer needs the bitsandbytes package, which is not installed "
                             "on this worker. Choose AdamW instead.") from None
        return bnb.optim.AdamW8bit(groups, weight_decay=weight_decay)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        # A fixed learning rate like kohya's `--optimizer_type adafactor` with relative_step off, so the
        # scheduler and warmup the user chose apply.
        return Adafactor(groups, scale_parameter=False, relative_step=False, warmup_init=False,
                         weight_decay=weight_decay)
    if name == "prodigy":
        try:
            from prodigyopt import Prodigy
        except ImportError:
            raise ValueError("The Prodigy optimizer needs the prodigyopt package on this worker.") from None
        # Prodigy estimates the step size itself; the learning rate (usually 1.0) multiplies its estimate.
        return Prodigy(groups, weight_decay=weight_decay, safeguard_warmup=True, use_bias_correction=True)
    raise ValueError(f"Unknown optimizer {name!r}.")


def min_snr_weights(noise_scheduler: Any, timesteps: Any, gamma: float, prediction_type: str) -> Any:
    """Per-sample loss weights of Min-SNR weighting (Hang et al. 2023): min(SNR, gamma) / SNR (v: / (SNR + 1))."""
    import torch

    alphas = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alphas / (1.0 - alphas)
    clipped = torch.minimum(snr, torch.full_like(snr, gamma))
    return clipped / (snr + 1.0) if prediction_type == "v_prediction" else clipped / snr
