"""A cancel is noticed within one step everywhere a run spends time: training steps and its sample images."""

from __future__ import annotations

import pytest

from training.ml.errors import TrainingCancelled
from training.ml.train import train_lora

from .conftest import Recorder


def test_a_cancel_while_sample_images_are_made_stops_within_one_denoising_step(tmp_path, tiny_model, tiny_dataset,
                                                                               train_config):
    common = dict(base_model=str(tiny_model), kind="sd15", dataset=tiny_dataset, output_dir=tmp_path, device="cpu",
                  config=train_config(steps=4, sample_every=2, sample_steps=30, checkpoint_every=0,
                                      sample_prompts=["a red square", "a blue square"]))
    denoising_steps = []
    first = Recorder(stop_after=2)  # asks to stop from step 2 on, which is when the first samples are made
    callbacks = first.callbacks()
    should_stop = callbacks.should_stop

    def counting_should_stop():
        denoising_steps.append(len(first.steps))
        return should_stop()

    callbacks.should_stop = counting_should_stop
    with pytest.raises(TrainingCancelled) as cancelled:
        train_lora(**common, callbacks=callbacks)

    assert cancelled.value.step == 2 and cancelled.value.checkpoint.endswith("step-000002")
    assert denoising_steps.count(2) == 1, "the first check during the samples stopped them"
    assert first.samples == [] and not list(tmp_path.rglob("samples/**/*.png"))

    resumed = train_lora(**common, callbacks=Recorder().callbacks())
    assert resumed.resumed_from == 2 and resumed.final_step == 4
