"""LoRA training for SD1.5 and SDXL UNets, after diffusers' train_text_to_image_lora.py.

The UNet layers that get LoRA come from the config's module set (attention, kohya's default set, or that plus
convolutions); the text encoders can train a LoRA too, with their own learning rate. The VAE stays frozen, and
unless the text encoders train, latents and text embeddings are cached (latent_cache.py). The run is
driven by an accelerate Accelerator, so it works on a CPU, a GPU, or several GPUs under `accelerate launch`.
A run can be cancelled and resumed: calling train_lora again with the same output_dir continues from the
latest checkpoint exactly as if it had never stopped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from . import checkpoints as ckpt
from .data import BatchPlan, dataset_fingerprint, read_examples
from .errors import NonFiniteLoss, TrainingCancelled
from .latent_cache import EncoderCache
from .train_config import LR_SCHEDULERS, MixedPrecision, TrainCallbacks, TrainConfig, TrainResult
from .trainer import DIFFUSERS_WEIGHTS, LoadedRun, Trainer

__all__ = [
    "LR_SCHEDULERS",
    "MixedPrecision",
    "NonFiniteLoss",
    "TrainCallbacks",
    "TrainConfig",
    "TrainResult",
    "TrainingCancelled",
    "train_lora",
]

# Every family trains: the UNet ones with the noise-prediction recipe, Flux.1 with flow matching on its transformer.
TRAINABLE_KINDS = ("sd15", "sd2", "sdxl", "flux")
# Changing any of these between a checkpoint and its resume would silently train a different LoRA.
RESUME_MUST_MATCH = ("rank", "alpha", "batch_size", "gradient_accumulation", "seed", "resolution", "buckets",
                     "lora_modules", "train_text_encoder", "optimizer")


def train_lora(
    *,
    base_model: str,
    kind: str,
    dataset: Sequence[tuple[Path, str]],
    output_dir: Path,
    config: TrainConfig,
    callbacks: TrainCallbacks | None = None,
    name: str = "lora",
    source_type: Literal["folder", "single_file", "hub"] | None = None,
    device: str | None = None,
) -> TrainResult:
    """Train (or resume training) a LoRA; write the diffusers and kohya files into output_dir.

    Raises TrainingCancelled (after saving a checkpoint) when callbacks.should_stop() turns true,
    NonFiniteLoss when the loss turns NaN/inf, ValueError for bad settings, ModelNotFound/WrongModelKind
    for a bad base model. Calling it again with the same output_dir resumes from the latest checkpoint.
    `device` (auto|cpu|cuda|mps) overrides settings.ML_DEVICE for this run.
    """
    config.validate()
    if kind not in TRAINABLE_KINDS:
        raise ValueError(f"LoRA training for the {kind!r} family is not available yet; it generates only.")
    callbacks = callbacks or TrainCallbacks()
    _check_name(name)
    dataset = [(Path(path), caption) for path, caption in dataset]
    if not dataset:
        raise ValueError("The dataset is empty: add at least one image.")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    ckpt.remove_temporary(output_dir)
    fingerprint = dataset_fingerprint(dataset)
    resume = _resume_point(output_dir, config, kind, fingerprint, callbacks.on_log)
    if kind == "flux":
        _check_flux_options(config)
        run = _setup_flux(base_model, source_type, device, config, callbacks.on_log)
    else:
        run = _setup(base_model, kind, source_type, device, config, callbacks.on_log)
    try:
        plan = BatchPlan(
            read_examples(dataset, resolution=config.resolution, multiple=run.multiple, use_buckets=config.buckets),
            batch_size=config.batch_size,
            seed=config.seed,
        )
        state = {"base_model": base_model, "kind": kind, "dataset": fingerprint, "config": config.to_dict()}
        run.cache = _encoder_cache(config, fingerprint, train_text=bool(run.text_encoders))
        if kind == "flux":
            from .families.flux_train import flux_trainer_class

            trainer = flux_trainer_class()(run, plan, config, callbacks, output_dir, state)
        else:
            trainer = Trainer(run, plan, config, callbacks, output_dir, state)
        trainer.name = name
        if resume is not None:
            trainer.restore(resume)
        trainer.train()
        if run.cache.stats():
            callbacks.on_log("encoder cache: " + ", ".join(f"{k} {v}" for k, v in run.cache.stats().items()))
        lora_path, kohya_path = trainer.save_outputs(name, base_model)
        return TrainResult(
            output_dir=output_dir,
            lora_path=lora_path,
            kohya_path=kohya_path,
            final_step=trainer.step,
            loss_history=list(trainer.history),
            steps_per_second=trainer.steps_per_second,
            resumed_from=trainer.resumed_from,
            checkpoints=ckpt.list_checkpoints(output_dir),
        )
    finally:
        _teardown(run)


def _encoder_cache(config: TrainConfig, fingerprint: str, *, train_text: bool) -> EncoderCache:
    # Keyed by the snapshot and resolution; each entry's own key carries the image, bucket, crop and flip.
    scope = (fingerprint, config.resolution, config.clip_skip)
    return EncoderCache(scope=scope, latents=config.cache, texts=config.cache and not train_text)


def _check_name(name: str) -> None:
    if not re.fullmatch(r"[\w][\w.-]{0,99}", name) or name.endswith(".safetensors"):
        raise ValueError(f"LoRA name {name!r} must be letters, digits, '_', '-' or '.', without an extension.")
    if name == Path(DIFFUSERS_WEIGHTS).stem:
        raise ValueError(f"LoRA name {name!r} is reserved for the diffusers-format file.")


def _resume_point(
    output_dir: Path, config: TrainConfig, kind: str, fingerprint: str, log: Callable[[str], None]
) -> Path | None:
    latest = ckpt.latest_checkpoint(output_dir)
    if latest is None:
        return None
    state = ckpt.read_state(latest)
    saved = state.get("config", {})
    for key in RESUME_MUST_MATCH:
        if saved.get(key) != getattr(config, key):
            raise ValueError(
                f"The checkpoint {latest} was trained with {key}={saved.get(key)!r} but this run asks for "
                f"{key}={getattr(config, key)!r}; use a new output folder or delete its checkpoints."
            )
    if state.get("kind") != kind:
        raise ValueError(f"The checkpoint {latest} is for a {state.get('kind')} model, not {kind}.")
    if state.get("dataset") != fingerprint:
        log("warning: the dataset changed since the checkpoint; the data order will differ from the first run")
    log(f"resuming from {latest.name} (step {state['step']})")
    return latest


def _accelerator(config: TrainConfig, device_preference: str | None, log: Callable[[str], None]) -> tuple[Any, ...]:
    """(accelerator, mixed precision actually used, dtype of the frozen weights) for a run on this machine."""
    import torch
    from accelerate import Accelerator

    from .pipelines import resolve_device

    device = resolve_device(device_preference)
    mixed = config.mixed_precision if device.startswith("cuda") else "no"
    if mixed != config.mixed_precision:
        log(f"mixed precision {config.mixed_precision} needs a CUDA GPU; training in full precision on {device}")
    _reset_accelerate()
    accelerator = Accelerator(
        mixed_precision=mixed, gradient_accumulation_steps=config.gradient_accumulation, cpu=device == "cpu"
    )
    return accelerator, mixed, {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed, torch.float32)


def _lr_scheduler(config: TrainConfig, optimizer: Any, accelerator: Any) -> Any:
    from diffusers.optimization import get_scheduler

    scheduler_name = config.lr_scheduler
    if scheduler_name == "constant" and config.lr_warmup_steps:
        scheduler_name = "constant_with_warmup"  # plain "constant" would silently ignore the warmup
    return get_scheduler(
        scheduler_name,
        optimizer=optimizer,
        num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=config.steps * accelerator.num_processes,
    )


def _setup(
    base_model: str,
    kind: str,
    source_type: str | None,
    device_preference: str | None,
    config: TrainConfig,
    log: Callable[[str], None],
) -> LoadedRun:
    # The training stack is heavy and only a training job needs it.
    import torch
    from diffusers import DDPMScheduler
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    from .optim import build_optimizer, text_encoder_lora_targets, unet_lora_targets
    from .pipelines import load_pipeline

    accelerator, mixed, weight_dtype = _accelerator(config, device_preference, log)
    pipe = load_pipeline(
        base_model, kind=kind, source_type=source_type, device=str(accelerator.device), dtype=weight_dtype
    )
    if getattr(pipe.vae.config, "force_upcast", False) and weight_dtype == torch.float16:
        pipe.vae.to(torch.float32)  # the SDXL VAE overflows in fp16
    for module in _frozen_modules(pipe):
        module.requires_grad_(False)
    unet = pipe.unet
    lora_config = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        init_lora_weights="gaussian",
        target_modules=unet_lora_targets(unet, config.lora_modules),
    )
    text_encoders = _text_encoders_to_train(pipe, kind, config)
    # The gaussian init draws from the global RNG; seeding it makes two runs with one seed start alike.
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(config.seed)
        unet.add_adapter(lora_config)
        for te in text_encoders.values():
            te.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.alpha, init_lora_weights="gaussian",
                                      target_modules=text_encoder_lora_targets(te)))
    trained = [unet, *text_encoders.values()]
    if mixed != "no":
        for model in trained:
            cast_training_params(model, dtype=torch.float32)  # LoRA weights train in fp32, the frozen base stays half
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    for model in trained:
        model.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    groups = [{"params": params, "lr": config.learning_rate}]
    te_params = [p for te in text_encoders.values() for p in te.parameters() if p.requires_grad]
    if te_params:
        groups.append({"params": te_params, "lr": config.text_encoder_lr or config.learning_rate})
        params = params + te_params
    optimizer = build_optimizer(config.optimizer, groups, weight_decay=config.weight_decay,
                                device=str(accelerator.device))
    lr_scheduler = _lr_scheduler(config, optimizer, accelerator)
    unet_prepared, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    down = 2 ** (len(unet.config.block_out_channels) - 1)
    return LoadedRun(
        accelerator=accelerator,
        pipe=pipe,
        unet=unet_prepared,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        noise_scheduler=DDPMScheduler.from_config(pipe.scheduler.config),
        params=params,
        weight_dtype=weight_dtype,
        kind=kind,
        multiple=max(8, pipe.vae_scale_factor * down),
        text_encoders=text_encoders,
        cache=EncoderCache(scope=None, latents=False, texts=False),
    )


def _check_flux_options(config: TrainConfig) -> None:
    problems = []
    if config.train_text_encoder:
        problems.append("text-encoder LoRA is not available for Flux.1 (its T5 encoder is too large to train here)")
    if config.min_snr_gamma:
        problems.append("min-SNR weighting is for noise-prediction models; Flux.1 trains with flow matching")
    if config.clip_skip > 1:
        problems.append("clip skip does not apply to Flux.1")
    if config.lora_modules != "attention":
        problems.append("Flux.1 LoRAs train on the transformer's attention (module set 'attention')")
    if config.noise_offset:
        problems.append("noise offset is for noise-prediction models; Flux.1 trains with flow matching")
    if problems:
        raise ValueError("Invalid settings for Flux.1: " + "; ".join(problems) + ".")


def _setup_flux(
    base_model: str,
    source_type: str | None,
    device_preference: str | None,
    config: TrainConfig,
    log: Callable[[str], None],
) -> LoadedRun:
    """Load a Flux pipeline and put a LoRA on its transformer's attention, following diffusers' Flux recipe."""
    import torch
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    from .families.flux import TRANSFORMER_ATTENTION
    from .optim import build_optimizer
    from .pipelines import load_pipeline

    accelerator, mixed, weight_dtype = _accelerator(config, device_preference, log)
    pipe = load_pipeline(base_model, kind="flux", source_type=source_type, device=str(accelerator.device),
                         dtype=weight_dtype)
    for name in ("vae", "text_encoder", "text_encoder_2", "transformer"):
        getattr(pipe, name).requires_grad_(False)
    transformer = pipe.transformer
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(config.seed)
        transformer.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.alpha, init_lora_weights="gaussian",
                                           target_modules=list(TRANSFORMER_ATTENTION)))
    if mixed != "no":
        cast_training_params(transformer, dtype=torch.float32)
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = build_optimizer(config.optimizer, [{"params": params, "lr": config.learning_rate}],
                                weight_decay=config.weight_decay, device=str(accelerator.device))
    lr_scheduler = _lr_scheduler(config, optimizer, accelerator)
    prepared, optimizer, lr_scheduler = accelerator.prepare(transformer, optimizer, lr_scheduler)
    return LoadedRun(
        accelerator=accelerator,
        pipe=pipe,
        unet=prepared,  # the module that trains: Flux's transformer
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        noise_scheduler=pipe.scheduler,
        params=params,
        weight_dtype=weight_dtype,
        kind="flux",
        multiple=max(16, pipe.vae_scale_factor * 2),  # latents are packed in 2x2 patches
        text_encoders={},
        cache=EncoderCache(scope=None, latents=False, texts=False),
    )


def _text_encoders_to_train(pipe: Any, kind: str, config: TrainConfig) -> dict[str, Any]:
    if not config.train_text_encoder:
        return {}
    names = ("text_encoder", "text_encoder_2") if kind == "sdxl" else ("text_encoder",)
    return {n: getattr(pipe, n) for n in names if getattr(pipe, n, None) is not None}


def _frozen_modules(pipe: Any) -> list[Any]:
    names = ("vae", "text_encoder", "text_encoder_2", "unet")
    return [getattr(pipe, n) for n in names if getattr(pipe, n, None) is not None]


def _reset_accelerate() -> None:
    # accelerate keeps process-wide singletons; a warm worker runs many trainings with different mixed
    # precision and accumulation settings, which the singletons would otherwise refuse. Private API.
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()
    GradientState._reset_state()


def _teardown(run: LoadedRun) -> None:
    from .pipelines import free_accelerator_memory

    run.accelerator.free_memory()
    run.pipe = run.unet = run.optimizer = None
    run.text_encoders = {}
    run.cache = EncoderCache(scope=None, latents=False, texts=False)
    _reset_accelerate()
    free_accelerator_memory()
