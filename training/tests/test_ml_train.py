"""LoRA training on the tiny model: real steps, checkpoints, cancel and resume, NaN stop, validation."""

from __future__ import annotations

import math

import pytest
from safetensors import safe_open

from training.ml.errors import NonFiniteLoss, TrainingCancelled
from training.ml.train import TrainConfig, train_lora

from .conftest import Recorder

pytestmark = pytest.mark.slow


def _tensors(path):
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def test_a_run_trains_the_lora_and_writes_both_files(trained):
    result, recorder = trained

    assert result.final_step == 6
    assert len(result.loss_history) == 6 and all(math.isfinite(x) for x in result.loss_history)
    assert [s[0] for s in recorder.steps] == [1, 2, 3, 4, 5, 6]
    assert all(total == 6 and lr == pytest.approx(2e-2) for _, total, _, lr in recorder.steps)
    assert result.steps_per_second > 0
    assert result.lora_path.name == "pytorch_lora_weights.safetensors"
    assert result.kohya_path.name == "tiny_style.safetensors"
    weights = _tensors(result.lora_path)
    ups = [t for k, t in weights.items() if "lora_B" in k or "lora.up" in k]
    assert ups and len(ups) * 2 == len(weights)
    # peft starts every up matrix at zero, so non-zero ones were learned.
    assert all(t.abs().sum() > 0 for t in ups)


def test_checkpoints_are_kept_to_the_limit_and_reported(trained):
    result, recorder = trained

    assert [p.name for p in result.checkpoints] == ["step-000005", "step-000006"]
    assert [step for step, _ in recorder.checkpoints] == [1, 2, 3, 4, 5, 6]
    files = {p.name for p in result.checkpoints[-1].iterdir()}
    assert {"pytorch_lora_weights.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "state.json"} <= files


def test_samples_are_generated_during_training(trained):
    _, recorder = trained

    assert [step for step, _ in recorder.samples] == [3, 6]
    assert all(path.is_file() and path.suffix == ".png" for _, paths in recorder.samples for path in paths)


def test_cancel_saves_a_checkpoint_and_the_resumed_run_matches_an_uninterrupted_one(
    tmp_path, tiny_model, tiny_dataset, train_config, trained
):
    uninterrupted, _ = trained
    common = dict(
        base_model=str(tiny_model),
        kind="sd15",
        dataset=tiny_dataset,
        output_dir=tmp_path,
        config=train_config(),
        name="tiny_style",
        device="cpu",
    )

    first = Recorder(stop_after=3)
    with pytest.raises(TrainingCancelled) as cancelled:
        train_lora(**common, callbacks=first.callbacks())
    assert cancelled.value.step == 3
    assert cancelled.value.checkpoint.endswith("step-000003")
    assert not (tmp_path / "pytorch_lora_weights.safetensors").exists()

    second = Recorder()
    resumed = train_lora(**common, callbacks=second.callbacks())

    assert resumed.resumed_from == 3
    assert [s[0] for s in second.steps] == [4, 5, 6]
    assert any("resuming from step-000003" in line for line in second.logs)
    assert resumed.loss_history == pytest.approx(uninterrupted.loss_history, rel=1e-5, abs=1e-6)
    final, reference = _tensors(resumed.lora_path), _tensors(uninterrupted.lora_path)
    assert final.keys() == reference.keys()
    assert all((final[k] - reference[k]).abs().max() < 1e-5 for k in final)


def test_resuming_with_a_different_rank_is_refused(tmp_path, tiny_model, tiny_dataset, train_config, trained):
    result, _ = trained
    import shutil

    shutil.copytree(result.output_dir / "checkpoints", tmp_path / "checkpoints")
    with pytest.raises(ValueError, match="rank=4 but this run asks for rank=8"):
        train_lora(
            base_model=str(tiny_model),
            kind="sd15",
            dataset=tiny_dataset,
            output_dir=tmp_path,
            config=train_config(rank=8),
            device="cpu",
        )


def test_an_exploding_loss_stops_the_run(tmp_path, tiny_model, tiny_dataset, train_config):
    # Adam moves every weight by about the learning rate per step, so 1e30 overflows the UNet at once.
    config = train_config(learning_rate=1e30, steps=5, checkpoint_every=0, sample_every=0)
    with pytest.raises(NonFiniteLoss, match=r"Loss became (NaN|infinite) at step 2; lower the learning rate"):
        train_lora(
            base_model=str(tiny_model),
            kind="sd15",
            dataset=tiny_dataset,
            output_dir=tmp_path,
            config=config,
            device="cpu",
        )
    assert not (tmp_path / "pytorch_lora_weights.safetensors").exists()


def test_gradient_accumulation_and_mixed_precision_fall_back_on_cpu(tmp_path, tiny_model, tiny_dataset, train_config):
    recorder = Recorder()
    config = train_config(
        steps=2,
        gradient_accumulation=2,
        mixed_precision="bf16",
        checkpoint_every=0,
        sample_every=0,
        buckets=False,
        center_crop=True,
        lr_warmup_steps=2,
    )
    result = train_lora(
        base_model=str(tiny_model),
        kind="sd15",
        dataset=tiny_dataset,
        output_dir=tmp_path,
        config=config,
        callbacks=recorder.callbacks(),
        device="cpu",
    )

    assert result.final_step == 2 and result.checkpoints == []
    assert any("full precision" in line for line in recorder.logs)
    # Warmup ramps the learning rate over the first optimizer steps, not micro-batches.
    assert [s[3] for s in recorder.steps] == pytest.approx([config.learning_rate / 2, config.learning_rate])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"steps": 0}, "steps must be at least 1"),
        ({"learning_rate": 0}, "learning_rate must be positive"),
        ({"resolution": 100}, "resolution must be a multiple of 8"),
        ({"mixed_precision": "fp8"}, "mixed_precision must be"),
        ({"caption_dropout": 1.5}, "caption_dropout must be between 0 and 1"),
        ({"keep_checkpoints": 0}, "keep_checkpoints must be at least 1"),
        ({"sample_every": 5}, "sample_every needs at least one sample prompt"),
        ({"lr_scheduler": "wobbly"}, "lr_scheduler must be one of"),
        ({"gradient_accumulation": 0}, "gradient_accumulation must be at least 1"),
    ],
)
def test_invalid_settings_are_explained(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{"steps": 10, **overrides})


def test_bad_inputs_fail_before_loading_anything(tmp_path, tiny_model, tiny_dataset):
    config = TrainConfig(steps=1, resolution=32)
    with pytest.raises(ValueError, match="dataset is empty"):
        train_lora(base_model=str(tiny_model), kind="sd15", dataset=[], output_dir=tmp_path, config=config)
    with pytest.raises(ValueError, match="LoRA name"):
        train_lora(
            base_model=str(tiny_model),
            kind="sd15",
            dataset=tiny_dataset,
            output_dir=tmp_path,
            config=config,
            name="../escape",
        )


def test_sdxl_loras_train_and_load(tmp_path, tiny_dataset):
    from training.ml.generate import generate
    from training.ml.pipelines import LoraSpec, apply_loras, load_pipeline
    from training.ml.tiny import build_tiny_pipeline

    model = build_tiny_pipeline(tmp_path / "tiny-sdxl", kind="sdxl")
    config = TrainConfig(steps=3, batch_size=2, learning_rate=1e-2, resolution=32, seed=1)
    result = train_lora(
        base_model=str(model),
        kind="sdxl",
        dataset=tiny_dataset,
        output_dir=tmp_path / "run",
        config=config,
        device="cpu",
    )

    assert len(result.loss_history) == 3 and all(math.isfinite(x) for x in result.loss_history)
    pipe = load_pipeline(str(model), kind="sdxl", device="cpu")
    params = dict(prompt="a red square", steps=3, width=32, height=32, seed=5, scheduler="euler")
    plain = generate(pipe, **params)[0]
    apply_loras(pipe, [LoraSpec("xl", result.kohya_path, 1.0)])
    styled = generate(pipe, **params)[0]
    assert plain.tobytes() != styled.tobytes()
