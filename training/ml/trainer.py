"""The training loop and what it writes: steps, checkpoints, samples and the final LoRA files.

Every random draw of a step (batch, crops, flips, caption dropout, VAE sample, noise, timesteps) comes
from the seed and the micro-batch's position in the data stream, so a resumed run repeats nothing and
skips nothing.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import checkpoints as ckpt
from .data import BatchPlan, CaptionOptions, load_pixels, plan_example, sample_rng
from .errors import NonFiniteLoss, TrainingCancelled
from .kohya import kohya_metadata, save_kohya, text_encoder_prefixes
from .latent_cache import EncoderCache
from .train_config import TrainCallbacks, TrainConfig

DIFFUSERS_WEIGHTS = "pytorch_lora_weights.safetensors"
# Every checkpoint also holds its kohya-format file, so any kept step can become a LoRA of its own.
CHECKPOINT_KOHYA = "kohya_lora.safetensors"


class _SamplingStopped(Exception):
    """should_stop() turned true while sample images were being made; the run saves a checkpoint and stops."""


@dataclass
class LoadedRun:
    """Everything a running training holds on to."""

    accelerator: Any
    pipe: Any
    unet: Any
    optimizer: Any
    lr_scheduler: Any
    noise_scheduler: Any
    params: list[Any]
    weight_dtype: Any
    kind: str
    multiple: int
    text_encoders: dict[str, Any]  # pipeline attribute name -> text encoder that trains a LoRA (empty: none)
    cache: EncoderCache


class Trainer:
    """The loop and its bookkeeping: step, position in the data stream and loss history."""

    def __init__(
        self,
        run: LoadedRun,
        plan: BatchPlan,
        config: TrainConfig,
        callbacks: TrainCallbacks,
        output_dir: Path,
        state: dict[str, Any],
    ) -> None:
        self.run, self.plan, self.config, self.callbacks = run, plan, config, callbacks
        self.output_dir, self.state = output_dir, state
        self.step = 0
        self.position = 0  # micro-batches consumed, across all processes' shares
        self.history: list[float] = []
        self.resumed_from: int | None = None
        self.steps_per_second = 0.0
        self.name = "lora"  # the LoRA's name in kohya metadata

    # --- resume ---

    def restore(self, checkpoint: Path) -> None:
        import torch

        state = ckpt.read_state(checkpoint)
        self._load_lora(checkpoint / DIFFUSERS_WEIGHTS)
        self.run.optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
        self.run.lr_scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
        ckpt.restore_rng_state(state["rng"], torch.load(checkpoint / "rng.pt", weights_only=True))
        self.step = self.resumed_from = int(state["step"])
        self.position = int(state["position"])
        self.history = [float(x) for x in state["loss_history"]]

    def _load_lora(self, path: Path) -> None:
        from diffusers.utils import convert_unet_state_dict_to_peft
        from peft.utils import set_peft_model_state_dict

        lora = self.run.pipe.lora_state_dict(str(path))[0]
        unet_sd = convert_unet_state_dict_to_peft({k[5:]: v for k, v in lora.items() if k.startswith("unet.")})
        parts = [(self._unwrapped_unet(), unet_sd)]
        for attr, te in self.run.text_encoders.items():
            prefix = f"{attr}."
            te_sd = {k[len(prefix):]: v for k, v in lora.items() if k.startswith(prefix)}
            parts.append((self.run.accelerator.unwrap_model(te), convert_unet_state_dict_to_peft(te_sd)))
        for model, state_dict in parts:
            result = set_peft_model_state_dict(model, state_dict, adapter_name="default")
            if getattr(result, "unexpected_keys", None):
                raise ValueError(f"Checkpoint {path} does not fit this model: {result.unexpected_keys[:3]}")

    # --- the loop ---

    def train(self) -> None:
        cfg, callbacks = self.config, self.callbacks
        started, start_step, sampling = time.perf_counter(), self.step, 0.0
        if self.step < cfg.steps and callbacks.should_stop():
            raise TrainingCancelled(self.step, self._latest())
        while self.step < cfg.steps:
            loss = self._one_step()
            self.step += 1
            self.history.append(loss)
            callbacks.on_step(self.step, cfg.steps, loss, float(self.run.lr_scheduler.get_last_lr()[0]))
            saved = None
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                saved = self.save_checkpoint()
            if cfg.sample_every and self.step % cfg.sample_every == 0:
                t = time.perf_counter()
                try:
                    self.sample()
                except _SamplingStopped:
                    saved = saved or self.save_checkpoint()
                    raise TrainingCancelled(self.step, str(saved)) from None
                sampling += time.perf_counter() - t
            if self.step < cfg.steps and callbacks.should_stop():
                saved = saved or self.save_checkpoint()
                raise TrainingCancelled(self.step, str(saved))
        elapsed = time.perf_counter() - started - sampling
        self.steps_per_second = (self.step - start_step) / elapsed if elapsed > 0 and self.step > start_step else 0.0
        if cfg.checkpoint_every and self.step > start_step:
            self.save_checkpoint()  # lets a later call with more steps continue this run

    def _one_step(self) -> float:
        run = self.run
        losses = []
        for _ in range(self.config.gradient_accumulation):
            with run.accelerator.accumulate(run.unet):
                loss = self._loss(self.position * run.accelerator.num_processes + run.accelerator.process_index)
                value = float(run.accelerator.gather(loss.detach().reshape(1)).mean().item())
                if not math.isfinite(value):
                    raise NonFiniteLoss(self.step + 1, value)
                run.accelerator.backward(loss)
                if run.accelerator.sync_gradients and self.config.max_grad_norm > 0:
                    run.accelerator.clip_grad_norm_(run.params, self.config.max_grad_norm)
                run.optimizer.step()
                run.lr_scheduler.step()
                run.optimizer.zero_grad(set_to_none=True)
            self.position += 1
            losses.append(value)
        return sum(losses) / len(losses)

    def _sample_batch(self, position: int) -> tuple[list[Any], list[Any], Any, Any]:
        """(examples, layouts, generator, latents) of one micro-batch: its crops, flips and captions, the
        generator every later draw of the step uses, and the VAE latents (shifted and scaled as the model wants)."""
        import torch

        run, cfg = self.run, self.config
        device = run.accelerator.device
        _, indices = self.plan.batch_at(position)
        captions = CaptionOptions(cfg.trigger_word, cfg.shuffle_tags, cfg.keep_tags)
        examples = [self.plan.examples[index] for index in indices]
        layouts = [
            plan_example(
                example,
                rng=sample_rng(cfg.seed, position, slot),
                center_crop=cfg.center_crop,
                random_flip=cfg.random_flip,
                caption_dropout=cfg.caption_dropout,
                captions=captions,
            )
            for slot, example in enumerate(examples)
        ]
        # One generator per micro-batch, seeded by its position: resuming replays the same noise.
        generator = torch.Generator().manual_seed((cfg.seed * 1_000_003 + position) % (2**63))
        vae = run.pipe.vae

        def encode(which: list[int]) -> tuple[Any, Any]:
            pixels = torch.stack([load_pixels(examples[i], layouts[i]) for i in which]).to(device, dtype=vae.dtype)
            dist = vae.encode(pixels).latent_dist
            return dist.mean, dist.std

        keys = [
            (str(e.path), e.bucket, lay.resized, lay.top, lay.left, lay.flip)
            for e, lay in zip(examples, layouts, strict=True)
        ]
        with torch.no_grad():
            mean, std = run.cache.latent_params(keys, encode)
            # The same draw diffusers' DiagonalGaussianDistribution.sample makes, so cached == live.
            eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
            # Flux's VAE also shifts its latents; SD's has no shift (None).
            shift = getattr(vae.config, "shift_factor", None) or 0.0
            latents = ((mean + std * eps - shift) * vae.config.scaling_factor).to(run.weight_dtype)
        return examples, layouts, generator, latents

    def _loss(self, position: int) -> Any:
        import torch
        import torch.nn.functional as F  # noqa: N812

        run, cfg = self.run, self.config
        device = run.accelerator.device
        examples, layouts, generator, latents = self._sample_batch(position)
        text, added = self._encode_text([lay.caption for lay in layouts], examples, layouts)
        noise = torch.randn(latents.shape, generator=generator).to(device, latents.dtype)
        num_train = run.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, num_train, (latents.shape[0],), generator=generator).to(device)
        if cfg.noise_offset:
            # Offset noise (Guttenberg 2023): a per-channel constant lets the model learn very dark or bright images.
            offset = torch.randn((latents.shape[0], latents.shape[1], 1, 1), generator=generator)
            noise = noise + cfg.noise_offset * offset.to(device, latents.dtype)
        noisy = run.noise_scheduler.add_noise(latents, noise, timesteps)
        prediction_type = run.noise_scheduler.config.prediction_type
        if prediction_type == "epsilon":
            target = noise
        elif prediction_type == "v_prediction":
            target = run.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            raise ValueError(f"Unsupported prediction type {prediction_type!r} in the base model's scheduler.")
        pred = run.unet(noisy, timesteps, text, added_cond_kwargs=added, return_dict=False)[0]
        if not cfg.min_snr_gamma:
            return F.mse_loss(pred.float(), target.float(), reduction="mean")
        from .optim import min_snr_weights

        per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        weights = min_snr_weights(run.noise_scheduler, timesteps, cfg.min_snr_gamma, prediction_type)
        return (per_sample * weights).mean()

    def _encode_text(self, captions: list[str], examples: list[Any], layouts: list[Any]) -> tuple[Any, Any]:
        import torch

        run, cfg = self.run, self.config
        device = run.accelerator.device
        # encode_prompt counts skipped layers from the last one; kohya's clip_skip 1 means none skipped.
        clip_skip = cfg.clip_skip - 1 or None
        training = bool(run.text_encoders)

        def encode(texts: list[str]) -> tuple[Any, ...]:
            with torch.set_grad_enabled(training):
                if run.kind != "sdxl":  # SD1.x and SD2.x: one text encoder, no size conditioning
                    if clip_skip:
                        return (_sd15_skipped_embeds(run.pipe, texts, device, clip_skip),)
                    return (run.pipe.encode_prompt(texts, device, 1, False)[0],)
                embeds, _, pooled, _ = run.pipe.encode_prompt(
                    prompt=texts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False,
                    clip_skip=clip_skip,
                )
                return embeds, pooled

        outputs = run.cache.text(captions, encode)
        if run.kind != "sdxl":
            return outputs[0], None
        embeds, pooled = outputs
        # SDXL also conditions on the original size, the crop's corner and the target size.
        time_ids = torch.tensor(
            [
                [e.original_size[1], e.original_size[0], *self._crop_corner(e, lay), e.bucket[1], e.bucket[0]]
                for e, lay in zip(examples, layouts, strict=True)
            ],
            device=device,
            dtype=embeds.dtype,
        )
        return embeds, {"text_embeds": pooled, "time_ids": time_ids}

    @staticmethod
    def _crop_corner(example: Any, layout: Any) -> tuple[int, int]:
        left = layout.resized[0] - example.bucket[0] - layout.left if layout.flip else layout.left
        return layout.top, left

    # --- writing ---

    def _unwrapped_unet(self) -> Any:
        return self.run.accelerator.unwrap_model(self.run.unet)

    def _lora_layers(self) -> dict[str, Any]:
        """The UNet's LoRA state dict in peft keys (lora_A/lora_B), which diffusers' loader reads as they are.

        diffusers' convert_state_dict_to_diffusers renames attention layers only (to lora.down/up), and its
        loader then drops them when a file mixes both spellings (LoCon), so the peft keys are written unchanged.
        """
        from peft.utils import get_peft_model_state_dict

        return get_peft_model_state_dict(self._unwrapped_unet())

    def _text_encoder_layers(self) -> dict[str, dict[str, Any]]:
        """{pipeline attribute: peft state dict} of each text encoder that trains a LoRA."""
        from peft.utils import get_peft_model_state_dict

        return {
            attr: get_peft_model_state_dict(self.run.accelerator.unwrap_model(te))
            for attr, te in self.run.text_encoders.items()
        }

    def _write_diffusers_lora(self, folder: Path) -> Path:
        layers = self._lora_layers()
        # The adapter config travels in the file header so loaders rebuild alpha != rank correctly.
        kwargs: dict[str, Any] = {
            "unet_lora_layers": layers,
            "unet_lora_adapter_metadata": self._unwrapped_unet().peft_config["default"].to_dict(),
        }
        for attr, peft_sd in self._text_encoder_layers().items():
            te = self.run.accelerator.unwrap_model(self.run.text_encoders[attr])
            kwargs[f"{attr}_lora_layers"] = peft_sd
            kwargs[f"{attr}_lora_adapter_metadata"] = te.peft_config["default"].to_dict()
        type(self.run.pipe).save_lora_weights(str(folder), safe_serialization=True, **kwargs)
        return folder / DIFFUSERS_WEIGHTS

    def _write_kohya(self, path: Path, name: str, base_model: str) -> None:
        cfg = self.config
        meta = kohya_metadata(rank=cfg.rank, alpha=cfg.alpha, kind=self.run.kind, name=name, base_model=base_model)
        meta["ss_steps"] = str(self.step)
        meta["ss_text_encoder_lr"] = str(cfg.text_encoder_lr or cfg.learning_rate) if self.run.text_encoders else ""
        meta["ss_network_args"] = f'{{"module_set": "{cfg.lora_modules}"}}'
        prefixes = text_encoder_prefixes(self.run.kind)
        text_encoders = {prefixes[attr]: sd for attr, sd in self._text_encoder_layers().items()}
        save_kohya(self._lora_layers(), path, alpha=cfg.alpha, metadata=meta, text_encoders=text_encoders)

    def save_checkpoint(self) -> Path:
        import torch

        accelerator = self.run.accelerator
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            return ckpt.checkpoint_dir(self.output_dir, self.step)
        plain_rng, tensor_rng = ckpt.rng_state()

        def write(folder: Path) -> None:
            self._write_diffusers_lora(folder)
            base = self.state.get("base_model", "")
            self._write_kohya(folder / CHECKPOINT_KOHYA, f"{self.name}-step{self.step}", base)
            torch.save(self.run.optimizer.state_dict(), folder / "optimizer.pt")
            torch.save(self.run.lr_scheduler.state_dict(), folder / "scheduler.pt")
            torch.save(tensor_rng, folder / "rng.pt")

        state = {**self.state, "position": self.position, "loss_history": self.history, "rng": plain_rng}
        path = ckpt.write_checkpoint(
            self.output_dir, self.step, write_files=write, state=state, keep=self.config.keep_checkpoints
        )
        self.callbacks.on_log(f"checkpoint saved at step {self.step}")
        self.callbacks.on_checkpoint(self.step, path)
        return path

    def _latest(self) -> str | None:
        latest = ckpt.latest_checkpoint(self.output_dir)
        return str(latest) if latest else None

    def sample(self) -> list[Path]:
        import torch

        accelerator = self.run.accelerator
        if not accelerator.is_main_process:
            return []
        folder = self.output_dir / "samples" / f"step-{self.step:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        unet = self._unwrapped_unet()
        unet.eval()
        paths = []
        callbacks, more_to_train = self.callbacks, self.step < self.config.steps

        def check_cancel(_pipe: Any, _index: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            # Samples of several prompts can take as long as many training steps: a cancel must not wait for them.
            if more_to_train and callbacks.should_stop():
                raise _SamplingStopped()
            return tensors

        try:
            with torch.no_grad(), accelerator.autocast():
                for index, prompt in enumerate(self.config.sample_prompts):
                    image = self.run.pipe(
                        prompt,
                        num_inference_steps=self.config.sample_steps,
                        width=self.config.resolution,
                        height=self.config.resolution,
                        generator=torch.Generator().manual_seed(self.config.seed + index),
                        callback_on_step_end=check_cancel,
                    ).images[0]
                    path = folder / f"{index:02d}.png"
                    image.save(path)
                    paths.append(path)
        finally:
            unet.train()
        self.callbacks.on_sample(self.step, paths)
        return paths

    def save_outputs(self, name: str, base_model: str) -> tuple[Path, Path]:
        """Write the final diffusers file and kohya file into output_dir, each atomically."""
        final = self.output_dir / DIFFUSERS_WEIGHTS
        kohya_path = self.output_dir / f"{name}.safetensors"
        accelerator = self.run.accelerator
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            return final, kohya_path
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-lora-", dir=self.output_dir))
        try:
            os.replace(self._write_diffusers_lora(tmp), final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._write_kohya(kohya_path, name, base_model)
        self.callbacks.on_log(f"saved {final.name} and {kohya_path.name}")
        return final, kohya_path


def _sd15_skipped_embeds(pipe: Any, texts: list[str], device: Any, clip_skip: int) -> Any:
    """SD1.5 prompt embeddings from an earlier CLIP layer, through the final layer norm as A1111 does.

    diffusers' own clip_skip path reaches for `text_encoder.text_model`, which transformers 5 no longer has.
    """
    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
    ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids.to(device)
    hidden = encoder(ids, output_hidden_states=True).hidden_states[-(clip_skip + 1)]
    norm = getattr(encoder, "text_model", encoder).final_layer_norm
    return norm(hidden).to(dtype=encoder.dtype)
