"""Provenance in training runs: the frozen snapshot carries each image's provenance, the run page warns about
opted-out and unlicensed images, and the LoRA files carry a summary of their sources in their metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from gallery.models import ImageProvenance
from training.models import LoraModel
from training.runs import services
from training.runs.provenance import (
    METADATA_KEY,
    read_safetensors_metadata,
    snapshot_summary,
    snapshot_warning,
    stamp_safetensors_metadata,
)

from .runs_fixtures import FAST

pytestmark = pytest.mark.usefixtures("media_root", "training_dirs")
SIGNAL = {"signal": "x-robots-tag", "value": "noai", "where": "image", "url": "https://a.example/i/1.png"}


def _mark(images):
    """First image: scraped from a.example, opted out; second: scraped from b.example under CC BY; rest: uploads."""
    first, second = images[0], images[1]
    for image, host in ((first, "a.example"), (second, "b.example")):
        image.source, image.source_url = "scrape", f"https://{host}/i/{image.pk}.png"
        image.source_page_url = f"https://{host}/page.html"
        image.save(update_fields=["source", "source_url", "source_page_url"])
    ImageProvenance.objects.filter(image=first).update(optout_status="opted_out", optout_signals=[SIGNAL])
    ImageProvenance.objects.filter(image=second).update(optout_status="none", licence="CC BY 4.0",
                                                        licence_url="https://creativecommons.org/licenses/by/4.0/")


def test_the_snapshot_freezes_each_images_provenance(user, run_album, unloaded_model):
    album, images = run_album
    _mark(images)
    run = services.run_create(owner=user, album_ids=[album.pk], params=FAST, enqueue=False)
    by_id = {e["image_id"]: e["provenance"] for e in run.dataset}
    assert by_id[images[0].pk]["optout_status"] == "opted_out" and by_id[images[0].pk]["optout_signals"] == [SIGNAL]
    assert by_id[images[1].pk]["licence"] == "CC BY 4.0"
    assert by_id[images[1].pk]["page_url"] == "https://b.example/page.html"
    assert by_id[images[2].pk]["source"] == "upload" and by_id[images[2].pk]["optout_status"] == "not_checked"
    # Frozen: a later change of the image's provenance does not change the run.
    ImageProvenance.objects.filter(image=images[0]).update(optout_status="none", optout_signals=[])
    run.refresh_from_db()
    assert {e["image_id"]: e["provenance"] for e in run.dataset}[images[0].pk]["optout_status"] == "opted_out"
    summary = snapshot_summary(run.dataset)
    assert summary["opted_out"] == 1 and summary["unknown_licence"] == len(images) - 1
    assert summary["domains"]["a.example"] == 1 and summary["domains"]["b.example"] == 1
    assert summary["domains"]["upload"] == len(images) - 2


def test_the_run_page_warns_about_opted_out_and_unlicensed_images(user, user_client, run_album, unloaded_model):
    album, images = run_album
    _mark(images)
    run = services.run_create(owner=user, album_ids=[album.pk], params=FAST, enqueue=False)
    html = user_client.get(run.get_absolute_url()).content.decode()
    assert 'data-testid="provenance-warning"' in html
    assert "1 image(s) whose publisher opted out of AI use" in html
    assert f"{len(images) - 1} image(s) without a known licence" in html
    assert "a.example (1)" in html and "CC BY 4.0 (1)" in html


def test_no_warning_when_every_image_is_licensed_and_not_opted_out(user, user_client, run_album, unloaded_model):
    album, images = run_album
    ImageProvenance.objects.filter(image__in=images).update(licence="CC0 1.0")
    run = services.run_create(owner=user, album_ids=[album.pk], params=FAST, enqueue=False)
    assert snapshot_warning(snapshot_summary(run.dataset)) == ""
    assert 'data-testid="provenance-warning"' not in user_client.get(run.get_absolute_url()).content.decode()
    # Runs frozen before provenance was kept: their images count as unknown.
    assert snapshot_warning(snapshot_summary([{"image_id": 1}])) == (
        "This run's dataset holds 1 image(s) without a known licence.")


def test_stamping_adds_metadata_and_keeps_every_tensor(tmp_path):
    path = tmp_path / "lora.safetensors"
    tensors = {"a.lora_down.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
               "a.alpha": np.array(2.0, dtype=np.float32), "b": np.ones((5,), dtype=np.float16)}
    save_file(tensors, str(path), metadata={"ss_network_dim": "4"})
    stamp_safetensors_metadata(path, {METADATA_KEY: json.dumps({"images": 3}), "other": "x"})
    with safe_open(str(path), framework="np") as handle:
        assert handle.metadata() == {"ss_network_dim": "4", METADATA_KEY: '{"images": 3}', "other": "x"}
        for key, value in tensors.items():
            np.testing.assert_array_equal(handle.get_tensor(key), value)
    assert read_safetensors_metadata(path)["ss_network_dim"] == "4"
    assert not list(tmp_path.glob(".*stamp"))  # no temporary file left


@pytest.mark.slow
def test_the_trained_lora_files_carry_a_summary_of_their_sources(user, run_album, tiny_base_model, run_worker):
    from django.core.files.storage import storages

    album, images = run_album
    _mark(images)
    run = services.run_create(owner=user, album_ids=[album.pk], params=FAST, name="Sourced")
    run_worker("train")
    run.refresh_from_db()
    lora = LoraModel.objects.get(training_run=run)
    for key in (lora.kohya_file, lora.diffusers_file):
        metadata = read_safetensors_metadata(storages["artifacts"].path(key))
        sources = json.loads(metadata[METADATA_KEY])
        assert sources["images"] == len(images) and sources["opted_out"] == 1
        assert sources["domains"]["a.example"] == 1 and sources["licences"]["CC BY 4.0"] == 1
    kohya = read_safetensors_metadata(storages["artifacts"].path(lora.kohya_file))
    assert kohya["ss_network_dim"] == "4"  # the trainer's own fields are kept
