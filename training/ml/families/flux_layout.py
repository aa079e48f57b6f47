"""Flux.1 transformers in Black Forest Labs' original single-file layout (``double_blocks.*``, fused q/k/v).

This is the layout of ``flux1-dev.safetensors`` and of the fine-tunes people share. diffusers' own converter
assumes the published widths (3072, MLP ratio 4); this mapping takes them from the model's config, so it reads
and writes any Flux-shaped transformer (the tiny test model too). A test checks the mapping against diffusers'
converter on a full-size transformer built on the meta device.
"""

from __future__ import annotations

from typing import Any

_BFL_PREFIX = "model.diffusion_model."


def _mapping(config: Any) -> list[tuple[str, tuple[str, ...], str]]:
    """(BFL module, diffusers module(s), how): "plain", "cat" (fused along dim 0) or "swap" (shift/scale)."""
    rows: list[tuple[str, tuple[str, ...], str]] = [
        ("time_in.in_layer", ("time_text_embed.timestep_embedder.linear_1",), "plain"),
        ("time_in.out_layer", ("time_text_embed.timestep_embedder.linear_2",), "plain"),
        ("vector_in.in_layer", ("time_text_embed.text_embedder.linear_1",), "plain"),
        ("vector_in.out_layer", ("time_text_embed.text_embedder.linear_2",), "plain"),
        ("txt_in", ("context_embedder",), "plain"),
        ("img_in", ("x_embedder",), "plain"),
        ("final_layer.linear", ("proj_out",), "plain"),
        ("final_layer.adaLN_modulation.1", ("norm_out.linear",), "swap"),
    ]
    if config.guidance_embeds:
        rows += [("guidance_in.in_layer", ("time_text_embed.guidance_embedder.linear_1",), "plain"),
                 ("guidance_in.out_layer", ("time_text_embed.guidance_embedder.linear_2",), "plain")]
    for i in range(config.num_layers):
        b, d = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        rows += [
            (b + "img_mod.lin", (d + "norm1.linear",), "plain"),
            (b + "txt_mod.lin", (d + "norm1_context.linear",), "plain"),
            (b + "img_attn.qkv", (d + "attn.to_q", d + "attn.to_k", d + "attn.to_v"), "cat"),
            (b + "txt_attn.qkv", (d + "attn.add_q_proj", d + "attn.add_k_proj", d + "attn.add_v_proj"), "cat"),
            (b + "img_attn.proj", (d + "attn.to_out.0",), "plain"),
            (b + "txt_attn.proj", (d + "attn.to_add_out",), "plain"),
            (b + "img_mlp.0", (d + "ff.net.0.proj",), "plain"),
            (b + "img_mlp.2", (d + "ff.net.2",), "plain"),
            (b + "txt_mlp.0", (d + "ff_context.net.0.proj",), "plain"),
            (b + "txt_mlp.2", (d + "ff_context.net.2",), "plain"),
            (b + "img_attn.norm.query_norm", (d + "attn.norm_q",), "norm"),
            (b + "img_attn.norm.key_norm", (d + "attn.norm_k",), "norm"),
            (b + "txt_attn.norm.query_norm", (d + "attn.norm_added_q",), "norm"),
            (b + "txt_attn.norm.key_norm", (d + "attn.norm_added_k",), "norm"),
        ]
    for i in range(config.num_single_layers):
        b, s = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        rows += [
            (b + "linear1", (s + "attn.to_q", s + "attn.to_k", s + "attn.to_v", s + "proj_mlp"), "cat"),
            (b + "linear2", (s + "proj_out",), "plain"),
            (b + "modulation.lin", (s + "norm.linear",), "plain"),
            (b + "norm.query_norm", (s + "attn.norm_q",), "norm"),
            (b + "norm.key_norm", (s + "attn.norm_k",), "norm"),
        ]
    return rows


def _swap_halves(tensor: Any) -> Any:
    import torch

    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def to_bfl(state: dict[str, Any], config: Any) -> dict[str, Any]:
    """A diffusers FluxTransformer2DModel state dict in BFL's layout."""
    import torch

    out: dict[str, Any] = {}
    for bfl, ours, how in _mapping(config):
        if how == "norm":
            out[f"{bfl}.scale"] = state[f"{ours[0]}.weight"]
            continue
        for part in ("weight", "bias"):
            tensors = [state[f"{name}.{part}"] for name in ours if f"{name}.{part}" in state]
            if not tensors:
                continue
            if how == "cat":
                out[f"{bfl}.{part}"] = torch.cat(tensors, dim=0)
            elif how == "swap":
                out[f"{bfl}.{part}"] = _swap_halves(tensors[0])
            else:
                out[f"{bfl}.{part}"] = tensors[0]
    return {key: tensor.contiguous() for key, tensor in out.items()}


def from_bfl(checkpoint: dict[str, Any], config: Any) -> dict[str, Any]:
    """BFL's layout (with or without the ``model.diffusion_model.`` prefix) as diffusers keys; KeyError names
    the first tensor a file lacks, ValueError the ones it has that a Flux transformer of this config has not."""
    checkpoint = {key.removeprefix(_BFL_PREFIX): value for key, value in checkpoint.items()}
    inner = config.num_attention_heads * config.attention_head_dim
    mlp = int(inner * getattr(config, "mlp_ratio", 4.0))
    used: set[str] = set()
    out: dict[str, Any] = {}
    for bfl, ours, how in _mapping(config):
        if how == "norm":
            out[f"{ours[0]}.weight"] = checkpoint[f"{bfl}.scale"]
            used.add(f"{bfl}.scale")
            continue
        for part in ("weight", "bias"):
            key = f"{bfl}.{part}"
            if key not in checkpoint:
                if part == "weight":
                    raise KeyError(key)
                continue
            used.add(key)
            tensor = checkpoint[key]
            if how == "cat":
                sizes = [inner] * 3 + ([mlp] if len(ours) == 4 else [])
                for name, piece in zip(ours, tensor.split(sizes, dim=0), strict=True):
                    out[f"{name}.{part}"] = piece.contiguous()
            elif how == "swap":
                out[f"{ours[0]}.{part}"] = _swap_halves(tensor)
            else:
                out[f"{ours[0]}.{part}"] = tensor
    extra = sorted(set(checkpoint) - used)
    if extra:
        raise ValueError(f"tensors that are not part of this Flux transformer: {', '.join(extra[:3])}")
    return out


def load_transformer(path: Any, config_folder: Any, dtype: Any) -> Any:
    """A FluxTransformer2DModel from a BFL single file, with the config of ``config_folder/transformer``."""
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import load_file

    config = FluxTransformer2DModel.load_config(str(config_folder), subfolder="transformer")
    with init_empty_weights():
        model = FluxTransformer2DModel.from_config(config)
    state = from_bfl(load_file(str(path)), model.config)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(dtype=dtype)
