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
from .data import BatchPlan, Prepared, prepare_example, sample_rng
from .errors import NonFiniteLoss, TrainingCancelled
from .kohya import kohya_metadata, save_kohya
from .train_config import TrainCallbacks, TrainConfig

DIFFUSERS_WEIGHTS = "pytorch_lora_weights.safetensors"


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
        result = set_peft_model_state_dict(self._unwrapped_unet(), unet_sd, adapter_name="default")
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

    def _loss(self, position: int) -> Any:
        import torch
        import torch.nn.functional as F  # noqa: N812

        run, cfg = self.run, self.config
        device = run.accelerator.device
        _, indices = self.plan.batch_at(position)
        items = [
            prepare_example(
                self.plan.examples[index],
                rng=sample_rng(cfg.seed, position, slot),
                center_crop=cfg.center_crop,
                random_flip=cfg.random_flip,
                caption_dropout=cfg.caption_dropout,
            )
            for slot, index in enumerate(indices)
        ]
        # One generator per micro-batch, seeded by its position: resuming replays the same noise.
        generator = torch.Generator().manual_seed((cfg.seed * 1_000_003 + position) % (2**63))
        vae = run.pipe.vae
        pixels = torch.stack([item.pixels for item in items]).to(device, dtype=vae.dtype)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample(generator=generator)
            latents = (latents * vae.config.scaling_factor).to(run.weight_dtype)
            text, added = self._encode_text(items)
        noise = torch.randn(latents.shape, generator=generator).to(device, latents.dtype)
        num_train = run.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, num_train, (latents.shape[0],), generator=generator).to(device)
        noisy = run.noise_scheduler.add_noise(latents, noise, timesteps)
        prediction_type = run.noise_scheduler.config.prediction_type
        if prediction_type == "epsilon":
            target = noise
        elif prediction_type == "v_prediction":
            target = run.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            raise ValueError(f"Unsupported prediction type {prediction_type!r} in the base model's scheduler.")
        pred = run.unet(noisy, timesteps, text, added_cond_kwargs=added, return_dict=False)[0]
        return F.mse_loss(pred.float(), target.float(), reduction="mean")

    def _encode_text(self, items: list[Prepared]) -> tuple[Any, dict[str, Any] | None]:
        import torch

        run = self.run
        captions = [item.caption for item in items]
        device = run.accelerator.device
        if run.kind != "sdxl":  # SD1.x and SD2.x: one text encoder, no size conditioning
            embeds, _ = run.pipe.encode_prompt(captions, device, 1, False)
            return embeds, None
        embeds, _, pooled, _ = run.pipe.encode_prompt(
            prompt=captions, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        # SDXL also conditions on the original size, the crop's corner and the target size.
        time_ids = torch.tensor(
            [[*it.original_size, *it.crop_top_left, it.pixels.shape[1], it.pixels.shape[2]] for it in items],
            device=device,
            dtype=embeds.dtype,
        )
        return embeds, {"text_embeds": pooled, "time_ids": time_ids}

    # --- writing ---

    def _unwrapped_unet(self) -> Any:
        return self.run.accelerator.unwrap_model(self.run.unet)

    def _lora_layers(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(peft state dict, the same converted to diffusers keys)."""
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        peft_sd = get_peft_model_state_dict(self._unwrapped_unet())
        return peft_sd, convert_state_dict_to_diffusers(peft_sd)

    def _write_diffusers_lora(self, folder: Path) -> Path:
        _, layers = self._lora_layers()
        lora_config = self._unwrapped_unet().peft_config["default"].to_dict()
        # The adapter config travels in the file header so loaders rebuild alpha != rank correctly.
        type(self.run.pipe).save_lora_weights(
            str(folder), unet_lora_layers=layers, safe_serialization=True, unet_lora_adapter_metadata=lora_config
        )
        return folder / DIFFUSERS_WEIGHTS

    def save_checkpoint(self) -> Path:
        import torch

        accelerator = self.run.accelerator
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            return ckpt.checkpoint_dir(self.output_dir, self.step)
        plain_rng, tensor_rng = ckpt.rng_state()

        def write(folder: Path) -> None:
            self._write_diffusers_lora(folder)
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
        peft_sd, _ = self._lora_layers()
        cfg = self.config
        meta = kohya_metadata(rank=cfg.rank, alpha=cfg.alpha, kind=self.run.kind, name=name, base_model=base_model)
        meta["ss_steps"] = str(self.step)
        save_kohya(peft_sd, kohya_path, alpha=cfg.alpha, metadata=meta)
        self.callbacks.on_log(f"saved {final.name} and {kohya_path.name}")
        return final, kohya_path
