"""Flux.1 LoRA training pieces, following diffusers' Flux LoRA recipe (train_dreambooth_lora_flux).

Rectified flow: x_t = (1 - sigma) * x_0 + sigma * noise, and the transformer predicts the velocity noise - x_0.
Timesteps are drawn from a logit-normal density (SD3/Flux practice), the guidance embedding of Flux.1-dev gets a
fixed guidance value, and latents are normalised with the VAE's shift and scale, then packed into 2x2 patches.
The LoRA goes on the transformer's attention projections (``flux.TRANSFORMER_ATTENTION``).

The export for ComfyUI and Forge names each layer ``lora_transformer_<diffusers module path, dots as
underscores>`` with ``lora_down``/``lora_up``/``alpha`` (the OneTrainer layout ComfyUI's Flux key map reads); the
diffusers file keeps ``transformer.<module>.lora_A/lora_B`` keys, which ComfyUI also reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Flux.1-dev was distilled with guidance; training at 1.0 is the diffusers recipe's default for LoRAs.
TRAIN_GUIDANCE = 1.0
LOGIT_MEAN, LOGIT_STD = 0.0, 1.0
KOHYA_PREFIX = "lora_transformer_"


@dataclass
class FluxBatch:
    """What one training step feeds the transformer, and what it must predict."""

    packed_noisy: Any
    image_ids: Any
    timesteps: Any  # in [0, 1], as the transformer takes them
    guidance: Any
    target: Any  # noise - x_0, unpacked (B, C, H, W)
    latent_size: tuple[int, int]


def encode_latents(vae: Any, pixels: Any, generator: Any) -> Any:
    """Pixels in [-1, 1] -> normalised latents (B, C, H, W)."""
    import torch

    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.sample(generator=generator)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (latents - shift) * vae.config.scaling_factor


def encode_text(pipe: Any, captions: list[str], device: Any, max_sequence_length: int | None = None) -> tuple[Any, ...]:
    """(T5 sequence embeddings, CLIP pooled embedding, text position ids) for the captions."""
    import torch

    max_len = max_sequence_length or min(512, int(getattr(pipe.tokenizer_2, "model_max_length", 512) or 512))
    with torch.no_grad():
        prompt_embeds, pooled, text_ids = pipe.encode_prompt(
            prompt=captions, prompt_2=captions, device=device, num_images_per_prompt=1, max_sequence_length=max_len)
    return prompt_embeds, pooled, text_ids


def make_batch(pipe: Any, latents: Any, generator: Any, *, guidance: float = TRAIN_GUIDANCE) -> FluxBatch:
    """Draw noise and timesteps and build the transformer's inputs for clean latents x_0."""
    import torch

    batch, channels, height, width = latents.shape
    noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
    u = torch.sigmoid(torch.normal(LOGIT_MEAN, LOGIT_STD, size=(batch,), generator=generator))
    sigmas = u.to(latents.device, latents.dtype).view(batch, 1, 1, 1)
    noisy = (1.0 - sigmas) * latents + sigmas * noise
    packed = type(pipe)._pack_latents(noisy, batch, channels, height, width)
    image_ids = type(pipe)._prepare_latent_image_ids(batch, height // 2, width // 2, latents.device, latents.dtype)
    transformer = pipe.transformer
    guidance_vec = (torch.full((batch,), float(guidance), device=latents.device, dtype=latents.dtype)
                    if transformer.config.guidance_embeds else None)
    return FluxBatch(packed_noisy=packed, image_ids=image_ids, timesteps=sigmas.view(batch), guidance=guidance_vec,
                     target=noise - latents, latent_size=(height, width))


def predict(pipe: Any, transformer: Any, batch: FluxBatch, text: tuple[Any, Any, Any]) -> Any:
    """The transformer's velocity prediction, unpacked to (B, C, H, W)."""
    prompt_embeds, pooled, text_ids = text
    packed = transformer(hidden_states=batch.packed_noisy, timestep=batch.timesteps, guidance=batch.guidance,
                         pooled_projections=pooled, encoder_hidden_states=prompt_embeds, txt_ids=text_ids,
                         img_ids=batch.image_ids, return_dict=False)[0]
    height, width = batch.latent_size
    return type(pipe)._unpack_latents(packed, height * pipe.vae_scale_factor, width * pipe.vae_scale_factor,
                                      pipe.vae_scale_factor)


def flow_loss(prediction: Any, target: Any) -> Any:
    import torch.nn.functional as F  # noqa: N812

    return F.mse_loss(prediction.float(), target.float(), reduction="mean")


def to_comfy(state_dict: Mapping[str, Any], *, alpha: float) -> dict[str, Any]:
    """A transformer LoRA (peft or diffusers keys) as ``lora_transformer_*`` keys with each layer's alpha."""
    import torch

    from ..kohya import _split

    out: dict[str, Any] = {}
    for key, tensor in state_dict.items():
        module, part = _split(key.removeprefix("transformer."))
        name = KOHYA_PREFIX + module.replace(".", "_")
        out[f"{name}.{part}.weight"] = tensor.detach().contiguous()
        out.setdefault(f"{name}.alpha", torch.tensor(float(alpha), dtype=torch.float32))
    return out


def comfy_key_map(transformer: Any) -> dict[str, str]:
    """The LoRA names ComfyUI's Flux key map accepts for a diffusers Flux transformer, by module: the OneTrainer
    form (``lora_transformer_`` + module with underscores) and the diffusers form (``transformer.`` + module)."""
    import torch

    names: dict[str, str] = {}
    for module_name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear):
            names[KOHYA_PREFIX + module_name.replace(".", "_")] = module_name
            names[f"transformer.{module_name}"] = module_name
    return names


def flux_trainer_class() -> type:
    """The Trainer for Flux: the same loop, checkpoints, resume and samples; flow matching on the transformer."""
    from ..kohya import kohya_metadata
    from ..trainer import Trainer

    class FluxTrainer(Trainer):
        def _loss(self, position: int) -> Any:
            run = self.run
            _examples, layouts, generator, latents = self._sample_batch(position)
            text = self._flux_text([lay.caption for lay in layouts])
            batch = make_batch(run.pipe, latents, generator)
            return flow_loss(predict(run.pipe, run.unet, batch, text), batch.target)

        def _flux_text(self, captions: list[str]) -> tuple[Any, Any, Any]:
            import torch

            device = self.run.accelerator.device

            def encode(texts: list[str]) -> tuple[Any, Any]:
                embeds, pooled, _ids = encode_text(self.run.pipe, texts, device)
                return embeds, pooled

            embeds, pooled = self.run.cache.text(captions, encode)
            # Flux's text positions are all zero (diffusers' encode_prompt makes them the same way).
            text_ids = torch.zeros(embeds.shape[1], 3, device=embeds.device, dtype=embeds.dtype)
            return embeds, pooled, text_ids

        def _load_lora(self, path: Any) -> None:
            from peft.utils import set_peft_model_state_dict
            from safetensors.torch import load_file

            state = {k.removeprefix("transformer."): v for k, v in load_file(str(path)).items()}
            result = set_peft_model_state_dict(self._unwrapped_unet(), state, adapter_name="default")
            if getattr(result, "unexpected_keys", None):
                raise ValueError(f"Checkpoint {path} does not fit this model: {result.unexpected_keys[:3]}")

        def _write_diffusers_lora(self, folder: Any) -> Any:
            from ..trainer import DIFFUSERS_WEIGHTS

            type(self.run.pipe).save_lora_weights(
                str(folder), transformer_lora_layers=self._lora_layers(), safe_serialization=True,
                transformer_lora_adapter_metadata=self._unwrapped_unet().peft_config["default"].to_dict())
            return folder / DIFFUSERS_WEIGHTS

        def _write_kohya(self, path: Any, name: str, base_model: str) -> None:
            import os

            from safetensors.torch import save_file

            cfg = self.config
            meta = kohya_metadata(rank=cfg.rank, alpha=cfg.alpha, kind="flux", name=name, base_model=base_model)
            meta["ss_steps"] = str(self.step)
            meta["modelspec.architecture"] = "flux-1-dev/lora"
            tmp = f"{path}.tmp"
            save_file(to_comfy(self._lora_layers(), alpha=cfg.alpha), tmp, metadata=meta)
            os.replace(tmp, path)

    return FluxTrainer
