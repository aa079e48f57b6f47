"""Write a diffusers SD1.5 / SD2 / SDXL pipeline as one checkpoint in the original (CompVis / Stability) layout.

This is the layout of the single .safetensors files people download and that A1111, Forge and ComfyUI load:
``model.diffusion_model.*`` (UNet), ``first_stage_model.*`` (VAE), ``cond_stage_model.*`` (SD1/SD2 text encoder)
or ``conditioner.embedders.{0,1}.*`` (SDXL). The mapping below is the inverse of the one diffusers'
``from_single_file`` applies; the tests load our output back through diffusers and compare every tensor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
           ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_VAE_ATTENTION = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def unet_to_original(state: dict[str, Any], config: Any) -> dict[str, Any]:
    """diffusers UNet2DConditionModel keys -> ``model.diffusion_model.*`` keys (same tensors)."""
    layers = int(config.layers_per_block)
    mapping: dict[str, str] = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "add_embedding.linear_1": "label_emb.0.0",
        "add_embedding.linear_2": "label_emb.0.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
        "mid_block.resnets.0": "middle_block.0",
        "mid_block.attentions.0": "middle_block.1",
        "mid_block.resnets.1": "middle_block.2",
    }
    for i in range(len(config.down_block_types)):
        for j in range(layers):
            index = i * (layers + 1) + j + 1
            mapping[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{index}.0"
            mapping[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{index}.1"
        mapping[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{(i + 1) * (layers + 1)}.0.op"
    for i, block_type in enumerate(config.up_block_types):
        for j in range(layers + 1):
            index = i * (layers + 1) + j
            mapping[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{index}.0"
            mapping[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{index}.1"
        has_attention = block_type.startswith("CrossAttn")
        mapping[f"up_blocks.{i}.upsamplers.0.conv"] = (
            f"output_blocks.{i * (layers + 1) + layers}.{2 if has_attention else 1}.conv")
    out: dict[str, Any] = {}
    for key, tensor in state.items():
        new = _map_prefix(key, mapping)
        if ".resnets." in key or key.startswith("mid_block.resnets"):
            for ours, theirs in _RESNET:
                new = new.replace(f".{ours}.", f".{theirs}.")
        out[f"model.diffusion_model.{new}"] = tensor
    return out


def vae_to_original(state: dict[str, Any], config: Any) -> dict[str, Any]:
    """diffusers AutoencoderKL keys -> ``first_stage_model.*`` keys; attention linears become 1x1 convolutions."""
    blocks = len(config.block_out_channels)
    mapping: dict[str, str] = {
        "encoder.conv_norm_out": "encoder.norm_out",
        "decoder.conv_norm_out": "decoder.norm_out",
        "encoder.mid_block.resnets.0": "encoder.mid.block_1",
        "encoder.mid_block.resnets.1": "encoder.mid.block_2",
        "encoder.mid_block.attentions.0": "encoder.mid.attn_1",
        "decoder.mid_block.resnets.0": "decoder.mid.block_1",
        "decoder.mid_block.resnets.1": "decoder.mid.block_2",
        "decoder.mid_block.attentions.0": "decoder.mid.attn_1",
    }
    for i in range(blocks):
        for j in range(int(config.layers_per_block) + 1):
            mapping[f"encoder.down_blocks.{i}.resnets.{j}"] = f"encoder.down.{i}.block.{j}"
            # The original decoder numbers its levels from the lowest resolution up.
            mapping[f"decoder.up_blocks.{i}.resnets.{j}"] = f"decoder.up.{blocks - 1 - i}.block.{j}"
        mapping[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = f"encoder.down.{i}.downsample.conv"
        mapping[f"decoder.up_blocks.{i}.upsamplers.0.conv"] = f"decoder.up.{blocks - 1 - i}.upsample.conv"
    out: dict[str, Any] = {}
    for key, tensor in state.items():
        new = _map_prefix(key, mapping)
        if ".resnets." in key:
            new = new.replace(".conv_shortcut.", ".nin_shortcut.")
        if ".attentions." in key:
            for ours, theirs in _VAE_ATTENTION:
                new = new.replace(f".{ours}.", f".{theirs}.")
            if new.endswith(".weight") and tensor.ndim == 2:
                tensor = tensor.reshape(*tensor.shape, 1, 1)
        out[f"first_stage_model.{new}"] = tensor
    return out


def clip_to_original(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A transformers CLIP text model as the original checkpoints store CLIP-L: ``text_model.*`` under a prefix."""
    state = _text_model_keys(state)
    return {f"{prefix}{key}": tensor for key, tensor in state.items()
            if not key.endswith("position_ids") and key.startswith("text_model.")}


def _text_model_keys(state: dict[str, Any]) -> dict[str, Any]:
    # transformers >= 5.6 flattened CLIPTextModel (no "text_model." level); the original layout keeps it.
    out = {}
    for key, tensor in state.items():
        if key.startswith(("embeddings.", "encoder.", "final_layer_norm.")):
            key = "text_model." + key
        out[key] = tensor
    return out


def clip_to_open_clip(state: dict[str, Any], prefix: str, *, layers: int) -> dict[str, Any]:
    """A transformers CLIP text model in OpenCLIP's layout (SD2's and SDXL's second encoder): fused q/k/v."""
    import torch

    state = _text_model_keys(state)
    out: dict[str, Any] = {
        f"{prefix}token_embedding.weight": state["text_model.embeddings.token_embedding.weight"],
        f"{prefix}positional_embedding": state["text_model.embeddings.position_embedding.weight"],
        f"{prefix}ln_final.weight": state["text_model.final_layer_norm.weight"],
        f"{prefix}ln_final.bias": state["text_model.final_layer_norm.bias"],
    }
    if "text_projection.weight" in state:  # OpenCLIP multiplies x @ proj; transformers' Linear stores proj.T
        out[f"{prefix}text_projection"] = state["text_projection.weight"].T.contiguous()
    for i in range(layers):
        ours = f"text_model.encoder.layers.{i}."
        theirs = f"{prefix}transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            out[f"{theirs}attn.in_proj_{part}"] = torch.cat(
                [state[f"{ours}self_attn.{p}_proj.{part}"] for p in ("q", "k", "v")], dim=0)
            out[f"{theirs}attn.out_proj.{part}"] = state[f"{ours}self_attn.out_proj.{part}"]
            out[f"{theirs}ln_1.{part}"] = state[f"{ours}layer_norm1.{part}"]
            out[f"{theirs}ln_2.{part}"] = state[f"{ours}layer_norm2.{part}"]
            out[f"{theirs}mlp.c_fc.{part}"] = state[f"{ours}mlp.fc1.{part}"]
            out[f"{theirs}mlp.c_proj.{part}"] = state[f"{ours}mlp.fc2.{part}"]
    return out


def pipeline_to_original(pipe: Any, family_key: str) -> dict[str, Any]:
    """Every weight of an SD1.5 / SD2 / SDXL pipeline under its original checkpoint name."""
    state = {**unet_to_original(pipe.unet.state_dict(), pipe.unet.config),
             **vae_to_original(pipe.vae.state_dict(), pipe.vae.config)}
    te = pipe.text_encoder.state_dict()
    if family_key == "sd15":
        state.update(clip_to_original(te, "cond_stage_model.transformer."))
    elif family_key == "sd2":
        layers = pipe.text_encoder.config.num_hidden_layers
        state.update(clip_to_open_clip(te, "cond_stage_model.model.", layers=layers))
    elif family_key == "sdxl":
        state.update(clip_to_original(te, "conditioner.embedders.0.transformer."))
        layers = pipe.text_encoder_2.config.num_hidden_layers
        state.update(clip_to_open_clip(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model.",
                                       layers=layers))
    else:
        raise ValueError(f"No original single-file layout for the {family_key!r} family.")
    return {key: tensor.detach().contiguous() for key, tensor in state.items()}


def save_single_file(pipe: Any, family_key: str, path: Path) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    save_file(pipeline_to_original(pipe, family_key), str(path), metadata={"format": "pt"})
    return path


def _map_prefix(key: str, mapping: dict[str, str]) -> str:
    # The longest matching module prefix wins ("down_blocks.0.resnets.1" before "down_blocks.0").
    best = ""
    for ours in mapping:
        if (key == ours or key.startswith(ours + ".")) and len(ours) > len(best):
            best = ours
    return mapping[best] + key[len(best):] if best else key
