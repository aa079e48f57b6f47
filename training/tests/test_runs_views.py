"""Training pages: create form, run page with its polled partial, cancel/resume, access rules, LoRA pages."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client

from imagineer.artifacts import artifact_delete, artifact_save
from imagineer.jobs import get_queue
from imagineer.models import JobStatus
from training.models import LoraModel, TrainingRun
from training.runs import services

pytestmark = pytest.mark.usefixtures("media_root", "training_dirs")


def _run(owner, albums, **params):
    return services.run_create(owner=owner, album_ids=[a.pk for a in albums], params=params, name="Style",
                               enqueue=False)


def _lora(run, tmp_path, *, public=False, name="style"):
    """A LoRA registered with files in the artifacts storage under the run's keys, where the run's job puts them."""
    diffusers_key = artifact_save(f"runs/{run.pk}/lora/{name}-d.safetensors", b"diffusers weights")
    kohya_key = artifact_save(f"runs/{run.pk}/lora/{name}-k.safetensors", b"kohya weights")
    lora = services.lora_register(run=run, diffusers_file=diffusers_key, kohya_file=kohya_key, name=name)
    LoraModel.objects.filter(pk=lora.pk).update(is_public=public)
    lora.refresh_from_db()
    return lora


def test_the_create_page_offers_only_your_albums_with_image_counts(user_client, staff_client, user, other_user,
                                                                    make_run_album, unloaded_model):
    make_run_album(user, "Mine")
    make_run_album(other_user, "Theirs")
    page = user_client.get("/training/runs/new/")
    assert page.status_code == 200
    assert "Mine (4 images)" in page.content.decode() and "Theirs" not in page.content.decode()
    assert b'id="training-presets"' in page.content and b"js/training.js" in page.content
    # Staff may train on anyone's album, so they see whose each one is.
    assert "bob: Theirs (4 images)" in staff_client.get("/training/runs/new/").content.decode()


def test_posting_the_form_starts_a_run(user_client, user, run_album, unloaded_model, redis_conn,
                                       django_capture_on_commit_callbacks):
    shapes, _ = run_album
    with django_capture_on_commit_callbacks(execute=True):
        response = user_client.post("/training/runs/new/", {
            "albums": [shapes.pk], "base_model": "tiny", "steps": "50", "batch_size": "1", "learning_rate": "0.0001",
            "rank": "8", "alpha": "8", "resolution": "", "seed": "3", "mixed_precision": "no",
            "checkpoint_every": "10", "sample_every": "0", "random_flip": "on",
        })
    run = TrainingRun.objects.get()
    assert response.status_code == 302 and response["Location"] == run.get_absolute_url()
    assert (run.owner, run.steps, run.rank, run.resolution, run.random_flip, run.center_crop) == (
        user, 50, 8, 512, True, False)
    assert get_queue("train").count == 1


def test_bad_settings_are_explained_and_nothing_is_created(user_client, other_user, run_album, make_run_album,
                                                           unloaded_model):
    shapes, _ = run_album
    theirs, _ = make_run_album(other_user, "Theirs")
    response = user_client.post("/training/runs/new/", {
        "albums": [shapes.pk], "steps": "0", "resolution": "100", "learning_rate": "-1", "sample_every": "5",
    })
    assert response.status_code == 400
    text = response.content.decode()
    assert "Ensure this value is greater than or equal to 1" in text
    response = user_client.post("/training/runs/new/", {"albums": [shapes.pk], "resolution": "100",
                                                         "learning_rate": "-1", "sample_every": "5"})
    text = response.content.decode()
    assert response.status_code == 400
    assert "multiple of 8" in text and "Learning rate must be more than 0" in text
    response = user_client.post("/training/runs/new/", {"albums": [theirs.pk]})
    assert response.status_code == 400 and "Select a valid choice" in response.content.decode()
    assert TrainingRun.objects.count() == 0


def test_run_pages_and_actions_are_404_for_other_users_and_open_to_staff(
    user, other_client, staff_client, run_album, unloaded_model
):
    shapes, _ = run_album
    run = _run(user, [shapes])
    for url in (f"/training/runs/{run.pk}/", f"/training/runs/{run.pk}/download/log/",
                f"/training/runs/{run.pk}/download/dataset/", f"/training/runs/{run.pk}/samples/1/0.png"):
        assert other_client.get(url).status_code == 404, url
    for url in (f"/training/runs/{run.pk}/cancel/", f"/training/runs/{run.pk}/resume/"):
        assert other_client.post(url).status_code == 404, url
    run.refresh_from_db()
    assert run.status == JobStatus.QUEUED and not run.cancel_requested
    assert staff_client.get(f"/training/runs/{run.pk}/").status_code == 200
    assert Client().get(f"/training/runs/{run.pk}/").status_code == 302  # to the login page


def test_the_run_list_shows_your_runs_and_staff_may_see_everyones(user, other_user, user_client, staff_client,
                                                                  make_run_album, unloaded_model):
    mine, _ = make_run_album(user, "Mine")
    theirs, _ = make_run_album(other_user, "Theirs")
    _run(user, [mine])
    TrainingRun.objects.filter(pk=_run(other_user, [theirs]).pk).update(name="Their style")
    assert "Their style" not in user_client.get("/training/").content.decode()
    assert "Style" in user_client.get("/training/").content.decode()
    assert "Their style" in staff_client.get("/training/?all=1").content.decode()


def test_the_status_partial_polls_while_the_run_is_active_and_draws_the_loss(user, user_client, run_album,
                                                                             unloaded_model):
    shapes, _ = run_album
    run = _run(user, [shapes], steps=100)
    TrainingRun.objects.filter(pk=run.pk).update(
        status=JobStatus.RUNNING, step=40, total_steps=100, steps_per_second=2.0,
        loss_history=[[10, 0.5], [20, 0.4], [30, 0.35], [40, 0.3]], message="Step 40 of 100, loss 0.3000",
    )
    partial = user_client.get(f"/training/runs/{run.pk}/", HTTP_HX_REQUEST="true")
    text = partial.content.decode()
    assert partial.status_code == 200 and "<html" not in text
    assert 'hx-trigger="every 2s"' in text and "<polyline" in text and "about 30 s" in text
    assert 'value="0"' in text or "<progress" in text
    TrainingRun.objects.filter(pk=run.pk).update(status=JobStatus.SUCCEEDED)
    done = user_client.get(f"/training/runs/{run.pk}/", HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in done


def test_cancel_and_resume_from_the_run_page(user, user_client, run_album, unloaded_model, redis_conn):
    shapes, _ = run_album
    run = _run(user, [shapes])
    response = user_client.post(f"/training/runs/{run.pk}/cancel/", HTTP_HX_REQUEST="true")
    run.refresh_from_db()
    assert response.status_code == 200 and run.status == JobStatus.CANCELLED
    assert "Resume" in response.content.decode()
    response = user_client.post(f"/training/runs/{run.pk}/resume/")
    run.refresh_from_db()
    assert response.status_code == 302 and run.status == JobStatus.QUEUED
    response = user_client.post(f"/training/runs/{run.pk}/resume/", follow=True)
    assert "Only a cancelled or failed run can be resumed" in response.content.decode()


def test_a_public_lora_is_visible_to_everyone_and_a_private_one_only_to_its_owner(
    user, other_client, user_client, run_album, unloaded_model, tmp_path
):
    shapes, _ = run_album
    public = _lora(_run(user, [shapes]), tmp_path, public=True, name="public-style")
    private = _lora(_run(user, [shapes]), tmp_path, name="private-style")
    anonymous = Client()
    assert anonymous.get(f"/training/loras/{public.pk}/").status_code == 200
    download = anonymous.get(f"/training/loras/{public.pk}/download/kohya/")
    assert download.status_code == 200 and b"".join(download.streaming_content) == b"kohya weights"
    assert 'filename="public-style.safetensors"' in download["Content-Disposition"]
    for client in (anonymous, other_client):
        assert client.get(f"/training/loras/{private.pk}/").status_code == 404
        assert client.get(f"/training/loras/{private.pk}/download/diffusers/").status_code == 404
    listing = other_client.get("/training/loras/").content.decode()
    assert "public-style" in listing and "private-style" not in listing
    page = user_client.get(f"/training/loras/{private.pk}/").content.decode()
    assert "private-style" in page and "Edit" in page
    # Only the owner edits: making it public is theirs to decide.
    assert other_client.post(f"/training/loras/{public.pk}/edit/", {"default_weight": "1"}).status_code == 404
    response = user_client.post(f"/training/loras/{private.pk}/edit/", {
        "friendly_name": "Private style", "default_weight": "0.8", "trigger_words": "ptx", "is_public": "on"})
    private.refresh_from_db()
    assert response.status_code == 302 and private.is_public and private.default_weight == 0.8
    assert other_client.get(f"/training/loras/{private.pk}/").status_code == 200


def test_a_lora_whose_file_is_gone_is_a_404_download_not_an_error(user, user_client, run_album, unloaded_model,
                                                                   tmp_path):
    shapes, _ = run_album
    lora = _lora(_run(user, [shapes]), tmp_path)
    artifact_delete(lora.kohya_file)
    assert user_client.get(f"/training/loras/{lora.pk}/download/kohya/").status_code == 404
    assert user_client.get(f"/training/loras/{lora.pk}/download/other/").status_code == 404
    assert user_client.get(f"/training/runs/{lora.training_run_id}/download/kohya/").status_code == 404


def test_the_dataset_download_is_the_frozen_snapshot(user, user_client, run_album, unloaded_model):
    import io
    import json
    import zipfile

    from gallery import services as gallery_services

    shapes, images = run_album
    run = _run(user, [shapes])
    gallery_services.album_remove_images(album=shapes, ids=[images[0].pk])
    response = user_client.get(f"/training/runs/{run.pk}/download/dataset/")
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    names = archive.namelist()
    assert {"00001.png", "00001.txt", "00004.png", "metadata.jsonl"} <= set(names)
    rows = [json.loads(line) for line in archive.read("metadata.jsonl").decode().splitlines()]
    assert [r["image_id"] for r in rows] == [i.pk for i in images] and rows[0]["text"] == "Shapes"


def test_the_admin_lists_and_opens_base_models_runs_and_loras(staff_client, user, run_album, unloaded_model,
                                                              tmp_path, settings):
    shapes, _ = run_album
    run = _run(user, [shapes])
    lora = _lora(run, tmp_path)
    for model, pk in (("basemodel", unloaded_model.pk), ("trainingrun", run.pk), ("loramodel", lora.pk)):
        assert staff_client.get(f"/admin/training/{model}/").status_code == 200, model
        assert staff_client.get(f"/admin/training/{model}/{pk}/change/").status_code == 200, model
    # The default moves to the model saved last instead of failing on the one-default constraint.
    folder = Path(settings.MODELS_DIR) / "second"
    folder.mkdir()
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    response = staff_client.post("/admin/training/basemodel/add/", {
        "name": "second", "kind": "sd15", "source": "second", "source_type": "folder", "description": "",
        "is_default": "on"})
    assert response.status_code == 302
    assert list(type(unloaded_model).objects.filter(is_default=True).values_list("name", flat=True)) == ["second"]
    # The web machine checks what it can: a path it does not hold is saved with a warning, not refused.
    response = staff_client.post("/admin/training/basemodel/add/", {
        "name": "gpu-only", "kind": "sd15", "source": "on-gpu-machines/model", "source_type": "folder"}, follow=True)
    assert "is not in this machine&#x27;s MODELS_DIR" in response.content.decode()
    for source, message in ((str(tmp_path / "nowhere"), "not a path relative to MODELS_DIR"),
                            ("second/model_index.json", "is not a folder")):
        bad = staff_client.post("/admin/training/basemodel/add/", {
            "name": "third", "kind": "sd15", "source": source, "source_type": "folder"})
        assert bad.status_code == 200 and message in bad.content.decode()


# LoRA files are served only under the run's own keys; the admin never edits them.

def test_the_lora_admin_has_no_editable_file_paths_and_no_add(staff_client, user, run_album, unloaded_model,
                                                               tmp_path):
    shapes, _ = run_album
    lora = _lora(_run(user, [shapes]), tmp_path)
    page = staff_client.get(f"/admin/training/loramodel/{lora.pk}/change/").content.decode()
    assert lora.kohya_file in page  # shown, read-only
    for field in ("diffusers_file", "kohya_file"):
        assert f'name="{field}"' not in page
    assert staff_client.get("/admin/training/loramodel/add/").status_code == 403


def test_a_lora_file_outside_its_runs_keys_is_never_served(user, user_client, run_album, unloaded_model, tmp_path,
                                                            settings):
    shapes, _ = run_album
    lora = _lora(_run(user, [shapes]), tmp_path, public=True)
    secret = tmp_path / "db.sqlite3"
    secret.write_bytes(b"SQLite format 3\x00 secrets")
    other_run = _run(user, [shapes])
    theirs = artifact_save(f"runs/{other_run.pk}/lora/theirs.safetensors", b"another run's weights")
    for value in (str(secret), theirs, f"runs/{lora.training_run_id}/../{other_run.pk}/lora/theirs.safetensors",
                  "base-models/tiny/manifest.json", "../../etc/passwd", "runs"):
        LoraModel.objects.filter(pk=lora.pk).update(diffusers_file=value, kohya_file=value)
        for client in (user_client, Client()):
            for fmt in ("diffusers", "kohya"):
                assert client.get(f"/training/loras/{lora.pk}/download/{fmt}/").status_code == 404, value
        for what in ("lora", "kohya"):
            assert user_client.get(f"/training/runs/{lora.training_run_id}/download/{what}/").status_code == 404
        assert "/download/kohya/" not in user_client.get(f"/training/loras/{lora.pk}/").content.decode()
    # A LoRA with no run has no keys of its own, so nothing of it is served.
    LoraModel.objects.filter(pk=lora.pk).update(training_run=None, kohya_file=theirs)
    assert user_client.get(f"/training/loras/{lora.pk}/download/kohya/").status_code == 404


def test_the_run_dataset_download_leaves_out_images_that_turned_private(other_user, other_client, user,
                                                                         make_run_album, ingest, unloaded_model):
    import io
    import json
    import zipfile

    from gallery import services as gallery_services

    from .runs_fixtures import picture

    album, (his,) = make_run_album(other_user, "Borrowed", [("blue", (32, 32))])
    hers = ingest(user, picture("red", (32, 32)), filename="red.png", is_public=True)
    gallery_services.album_add_images(album=album, images=[hers])
    run = _run(other_user, [album])
    assert [e["image_id"] for e in run.dataset] == [his.pk, hers.pk]
    gallery_services.images_set_public(user=user, ids=[hers.pk], public=False)
    response = other_client.get(f"/training/runs/{run.pk}/download/dataset/")
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    rows = [json.loads(line) for line in archive.read("metadata.jsonl").decode().splitlines()]
    assert [r["image_id"] for r in rows] == [his.pk] and "00002.png" not in archive.namelist()


# --- a first run: defaults that suit the base model, the duration estimate ---------------------------------


def _field_value(html: str, name: str) -> str | None:
    match = re.search(rf'<input[^>]*name="{name}"[^>]*>', html)
    if match is None:
        return None
    value = re.search(r'value="([^"]*)"', match.group(0))
    return value.group(1) if value else ""


@pytest.mark.parametrize("kind, native, size, steps", [
    ("sd15", 64, "64", "300"),  # the tiny model: its own size, and the quick preset (a minute on a CPU)
    ("sd15", None, "512", "1000"),
    ("sdxl", None, "1024", "1000"),
])
def test_the_form_defaults_to_the_base_models_native_size_and_a_preset_that_suits_it(
    user, user_client, make_run_album, kind, native, size, steps
):
    from training.models import BaseModel

    BaseModel.objects.create(name="base", source="/nonexistent", kind=kind, native_resolution=native,
                             is_default=True)
    make_run_album(user, "Shapes")
    html = user_client.get("/training/runs/new/").content.decode()
    assert _field_value(html, "resolution") == size
    assert _field_value(html, "steps") == steps
    assert '"base": {"size": ' + size in html  # for the script that follows a change of model


def test_samples_are_on_by_default_with_a_prompt_from_the_albums_captions(user, user_client, make_run_album,
                                                                         unloaded_model):
    from labeling.services import caption_set

    shapes, images = make_run_album(user, "Shapes")
    other, _ = make_run_album(user, "Other", colours=[("purple", (40, 40))])
    caption_set(image=images[0], user=user, text="a red ellipse on white")
    html = user_client.get(f"/training/runs/new/?album={shapes.pk}").content.decode()
    assert int(_field_value(html, "sample_every")) > 0
    assert _field_value(html, "sample_prompt") == "a red ellipse on white"
    # Every album's suggestion is on the page, for when the user ticks another album (no caption: its name).
    assert f'"{other.pk}": "Other"' in html
    # The only album of a newcomer is chosen for them, with its prompt.
    other.delete()
    html = user_client.get("/training/runs/new/").content.decode()
    assert re.search(rf'name="albums" value="{shapes.pk}"[^>]*checked', html)
    assert _field_value(html, "sample_prompt") == "a red ellipse on white"


def test_the_form_shows_an_estimate_once_a_run_of_that_model_and_size_was_measured(user, user_client, run_album,
                                                                                   unloaded_model):
    from datetime import timedelta

    from django.utils import timezone

    shapes, _ = run_album
    page = user_client.get("/training/runs/new/").content.decode()
    assert "no measurement yet for tiny at 512 px on this server" in page
    assert 'hx-get="/training/runs/new/estimate/"' in page
    run = _run(user, [shapes], steps=300, batch_size=1, resolution=512)
    now = timezone.now()
    # 300 steps at 5 steps/s is 60 s of training; the run took 75 s, so 15 s went to loading and saving.
    TrainingRun.objects.filter(pk=run.pk).update(status=JobStatus.SUCCEEDED, step=300, steps_per_second=5.0,
                                                 started_at=now - timedelta(seconds=75), finished_at=now)
    estimate = user_client.get("/training/runs/new/estimate/", {
        "base_model": "tiny", "resolution": "512", "steps": "885", "batch_size": "1"}, HTTP_HX_REQUEST="true")
    text = estimate.content.decode()
    assert estimate.status_code == 200 and "<html" not in text
    assert "about 3 minutes" in text and "measured 5.00 steps/s at 512 px" in text and "on this server" in text
    # Twice the batch: each step does twice the work.
    text = user_client.get("/training/runs/new/estimate/", {
        "base_model": "tiny", "resolution": "512", "steps": "300", "batch_size": "2"}).content.decode()
    assert "about 2 minutes" in text and "batch size 1" in text
    # Epochs count the chosen albums' images.
    text = user_client.get("/training/runs/new/estimate/", {
        "base_model": "tiny", "resolution": "", "steps": "", "epochs": "210", "batch_size": "1",
        "albums": [str(shapes.pk)]}).content.decode()
    assert "about 3 minutes" in text  # 210 epochs of 4 images: 840 steps
    # Another size has not been measured.
    text = user_client.get("/training/runs/new/estimate/", {
        "base_model": "tiny", "resolution": "256", "steps": "300", "batch_size": "1"}).content.decode()
    assert "no measurement yet for tiny at 256 px" in text
    # The create page itself shows it for its defaults once measured at them.
    assert "measured 5.00 steps/s at 512 px" in user_client.get("/training/runs/new/").content.decode()


@pytest.mark.parametrize("params", [
    {"base_model": "nope", "resolution": "512", "steps": "10", "batch_size": "1"},
    {"base_model": "tiny", "resolution": "x", "steps": "1e9", "batch_size": "0"},
    {"base_model": ["a", "b"], "epochs": "-3", "albums": ["x", "999999999999999999999"]},
    {},
])
def test_the_estimate_never_fails_on_bad_input(user_client, unloaded_model, params):
    response = user_client.get("/training/runs/new/estimate/", params)
    assert response.status_code == 200 and "measured" not in response.content.decode()


def test_the_estimate_needs_a_login(client, unloaded_model):
    assert client.get("/training/runs/new/estimate/").status_code == 302


# --- flash messages on the run page ---------------------------------------------------------------------


def test_a_message_is_shown_once_and_cleared_when_the_run_ends(user, user_client, run_album, unloaded_model,
                                                               redis_conn):
    shapes, _ = run_album
    response = user_client.post("/training/runs/new/", {"albums": [shapes.pk], "base_model": "tiny",
                                                        "steps": "5", "batch_size": "1", "sample_every": "0",
                                                        "mixed_precision": "no"},
                                follow=True)
    run = TrainingRun.objects.get()
    assert "Training started." in response.content.decode()
    # Polling while it runs leaves the page's messages alone...
    TrainingRun.objects.filter(pk=run.pk).update(status=JobStatus.RUNNING)
    poll = user_client.get(run.get_absolute_url(), HTTP_HX_REQUEST="true").content.decode()
    assert 'id="messages"' not in poll
    # ...and the poll that sees the run end clears them: "Training started." would be stale.
    TrainingRun.objects.filter(pk=run.pk).update(status=JobStatus.SUCCEEDED)
    poll = user_client.get(run.get_absolute_url(), HTTP_HX_REQUEST="true").content.decode()
    assert '<div id="messages" hx-swap-oob="innerHTML"></div>' in poll
    assert "Training started." not in user_client.get(run.get_absolute_url()).content.decode()


def test_the_message_of_an_htmx_cancel_shows_at_once_and_never_again(user, user_client, run_album, unloaded_model):
    shapes, _ = run_album
    run = _run(user, [shapes])
    TrainingRun.objects.filter(pk=run.pk).update(status=JobStatus.RUNNING)
    response = user_client.post(f"/training/runs/{run.pk}/cancel/", HTTP_HX_REQUEST="true").content.decode()
    assert 'hx-swap-oob="innerHTML"' in response and "Cancelling: the run saves a checkpoint" in response
    # Shown by the htmx response, so not again on the next page.
    assert "Cancelling" not in user_client.get("/training/").content.decode()
    assert 'hx-swap-oob' not in user_client.get(run.get_absolute_url()).content.decode()
