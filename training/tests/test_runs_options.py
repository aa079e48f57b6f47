"""Trainer options through the form, the JSON API and the train_lora command, into the job's TrainConfig."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from imagineer.services import api_token_create
from training.models import TrainingRun
from training.runs import services
from training.runs.params import OPTION_NAMES, PRESETS, RunInputError
from training.runs.services.train import _config

pytestmark = pytest.mark.usefixtures("media_root", "training_dirs")

KOHYA_STYLE = dict(optimizer="adafactor", lr_scheduler="cosine", lr_warmup_steps=10, gradient_accumulation=2,
                   max_grad_norm=0.5, weight_decay=0.1, min_snr_gamma=5.0, noise_offset=0.05, lora_modules="locon",
                   train_text_encoder=True, text_encoder_lr=5e-5, trigger_word="zqx", shuffle_tags=True,
                   keep_tags=1, clip_skip=2, cache=False)


def _create(owner, album, **params):
    return services.run_create(owner=owner, album_ids=[album.pk], params=params, enqueue=False)


def test_options_are_stored_and_reach_the_train_config(user, run_album, unloaded_model):
    shapes, _ = run_album
    run = _create(user, shapes, steps=5, **KOHYA_STYLE)
    assert run.options == KOHYA_STYLE
    config = _config(run)
    assert {name: getattr(config, name) for name in OPTION_NAMES} == KOHYA_STYLE

    plain = _create(user, shapes, steps=5)
    assert plain.options["optimizer"] == "adamw" and plain.options["text_encoder_lr"] is None
    assert plain.options["lora_modules"] == "attention" and plain.options["cache"] is True
    assert _config(plain).text_encoder_lr is None


def test_bad_options_are_named_and_nothing_is_written(user, run_album, unloaded_model, xl_base):
    shapes, _ = run_album
    with pytest.raises(RunInputError) as caught:
        _create(user, shapes, optimizer="lion", lr_scheduler="sometimes", lora_modules="all", noise_offset=2,
                gradient_accumulation=0, clip_skip=20, keep_tags=-1, trigger_word="a, b", text_encoder_lr=0)
    errors = caught.value.errors
    assert set(errors) == {"optimizer", "lr_scheduler", "lora_modules", "noise_offset", "gradient_accumulation",
                           "clip_skip", "keep_tags", "trigger_word", "text_encoder_lr"}
    assert "adamw, adamw8bit, adafactor, prodigy" in errors["optimizer"][0]
    with pytest.raises(RunInputError, match="Prodigy adapts one step size"):
        _create(user, shapes, optimizer="prodigy", learning_rate=1.0, text_encoder_lr=1e-4)
    with pytest.raises(RunInputError, match="Clip skip is for SD1.5"):
        services.run_create(owner=user, album_ids=[shapes.pk], params={"clip_skip": 2}, base_model=xl_base,
                            enqueue=False)
    assert TrainingRun.objects.count() == 0


def test_the_form_offers_presets_and_advanced_options(user_client, user, run_album, unloaded_model):
    shapes, _ = run_album
    page = user_client.get("/training/runs/new/").content.decode()
    for name in OPTION_NAMES:
        assert f'name="{name}"' in page, name
    assert '<option value="prodigy">' in page and "kohya-style" in page
    assert set(PRESETS["kohya"]) >= {"lora_modules", "min_snr_gamma", "lr_scheduler"}

    response = user_client.post("/training/runs/new/", {
        "albums": [shapes.pk], "base_model": "tiny", "steps": "5", "batch_size": "1", "learning_rate": "0.0001",
        "rank": "4", "alpha": "4", "seed": "0", "mixed_precision": "no", "checkpoint_every": "0",
        "sample_every": "0", "optimizer": "adafactor", "lr_scheduler": "cosine", "lora_modules": "kohya",
        "train_text_encoder": "on", "text_encoder_lr": "", "trigger_word": "zqx", "min_snr_gamma": "5",
        "clip_skip": "2", "cache": "on",
    })
    run = TrainingRun.objects.get()
    assert response.status_code == 302
    assert (run.options["optimizer"], run.options["lora_modules"], run.options["train_text_encoder"]) == (
        "adafactor", "kohya", True)
    assert (run.options["trigger_word"], run.options["min_snr_gamma"], run.options["clip_skip"]) == ("zqx", 5.0, 2)
    assert run.options["text_encoder_lr"] is None and run.options["shuffle_tags"] is False

    bad = user_client.post("/training/runs/new/", {"albums": [shapes.pk], "optimizer": "lion", "noise_offset": "3"})
    assert bad.status_code == 400 and TrainingRun.objects.count() == 1
    assert "Select a valid choice" in bad.content.decode() and "Noise offset" in bad.content.decode()


def test_training_source_albums_come_first(user_client, user, make_run_album, unloaded_model):
    make_run_album(user, "Aardvarks")
    source, _ = make_run_album(user, "Zebras")
    source.is_training_source = True
    source.save(update_fields=["is_training_source"])
    page = user_client.get("/training/runs/new/").content.decode()
    assert page.index("Zebras (4 images · training source)") < page.index("Aardvarks (4 images)")


def test_the_api_takes_options_and_names_bad_ones(client, user, run_album, unloaded_model):
    shapes, _ = run_album
    token = api_token_create(user=user, name="t")[1]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    body = {"album_ids": [shapes.pk], "steps": 5, "optimizer": "prodigy", "learning_rate": 1.0,
            "lora_modules": "kohya", "min_snr_gamma": 5, "trigger_word": "zqx", "shuffle_tags": True, "keep_tags": 1}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(services, "enqueue_job", lambda run, **kw: None)
        patch.setattr(services, "ensure_queue_available", lambda: None)
        response = client.post("/api/training/runs", body, content_type="application/json", **auth)
    assert response.status_code == 201, response.content
    options = response.json()["options"]
    assert (options["optimizer"], options["lora_modules"], options["keep_tags"]) == ("prodigy", "kohya", 1)

    bad = client.post("/api/training/runs", {"album_ids": [shapes.pk], "optimizer": "lion", "clip_skip": 0},
                      content_type="application/json", **auth)
    assert bad.status_code == 422
    assert {tuple(e["loc"])[-1] for e in bad.json()["detail"]} == {"optimizer", "clip_skip"}


@pytest.mark.django_db(transaction=True)  # the inline job manages its own database connection, as in a worker
def test_train_lora_takes_options_and_refuses_bad_ones(run_album):
    from training.models import BaseModel

    BaseModel.objects.create(name="gone", source="base/gone", kind="sd15", source_type="folder", is_default=True)
    with pytest.raises(CommandError, match="Noise offset must be at most 1"):
        call_command("train_lora", "--album", "Shapes", "--noise-offset", "3", "--inline")
    with pytest.raises(CommandError, match="Caption dropout must be at most 1"):
        call_command("train_lora", "--album", "Shapes", "--caption-dropout", "1.5", "--inline")
    with pytest.raises(CommandError):  # the base model is not there: the run fails, after storing the options
        call_command("train_lora", "--album", "Shapes", "--steps", "1", "--optimizer", "adafactor",
                     "--lora-modules", "locon", "--train-text-encoder", "--trigger-word", "zqx", "--clip-skip", "2",
                     "--no-cache", "--caption-dropout", "0.25", "--no-random-flip", "--center-crop",
                     "--no-gradient-checkpointing", "--sample-every", "0", "--inline", stdout=io.StringIO())
    run = TrainingRun.objects.get()
    assert (run.caption_dropout, run.random_flip, run.center_crop, run.gradient_checkpointing, run.sample_every) == (
        0.25, False, True, False, 0)
    assert (run.options["optimizer"], run.options["lora_modules"], run.options["train_text_encoder"]) == (
        "adafactor", "locon", True)
    assert (run.options["trigger_word"], run.options["clip_skip"], run.options["cache"]) == ("zqx", 2, False)
