"""manage.py generate: inline and queued runs, printed image ids and paths, clear errors and exit status."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from imagineer.models import JobStatus
from training.ml.a1111 import parse_a1111_parameters, read_png_parameters
from training.models import GenerationJob

pytestmark = pytest.mark.usefixtures("media_root")
FAST_ARGS = ["--steps", "2", "--width", "32", "--height", "32", "--scheduler", "euler"]


def _run(*args) -> str:
    out = io.StringIO()
    call_command("generate", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.slow
def test_it_generates_inline_and_prints_the_image_ids_and_paths(transactional_db, user, loras):
    output = _run("a red square", "--negative", "blur", "--lora", "style:0.5", "--lora", "early", "--seed", "5",
                  "--count", "2", "--owner", "alice", "--guidance", "6", "--inline", *FAST_ARGS)

    job = GenerationJob.objects.get()
    assert job.status == JobStatus.SUCCEEDED and job.owner == user
    lines = [line for line in output.splitlines() if line.startswith("image ")]
    assert len(lines) == 2
    path = Path(lines[0].split(": ", 1)[1])
    assert path.is_file()
    params = parse_a1111_parameters(read_png_parameters(path.read_bytes()))
    assert params["loras"] == [("style", 0.5), ("early", 0.6)] and params["cfg_scale"] == 6.0


def test_without_wait_it_only_queues_and_says_where_in_the_queue(user, base_model, redis_conn):
    output = _run("a red square", "--owner", "alice", *FAST_ARGS)
    assert "position 1" in output and GenerationJob.objects.get().status == JobStatus.QUEUED


@pytest.mark.parametrize(("args", "message"), [
    (["", "--owner", "alice"], "the prompt is empty"),
    (["x", "--owner", "alice", "--width", "100"], "width must be a multiple of 8"),
    (["x", "--owner", "alice", "--steps", "0"], "steps must be between 1 and 150"),
    (["x", "--owner", "alice", "--lora", "ghost"], "no LoRA named 'ghost'"),
    (["x", "--owner", "alice", "--lora", "secret"], "no LoRA named 'secret'"),
    (["x", "--owner", "alice", "--lora", "xl-style"], "cannot be used with tiny"),
    (["x", "--owner", "alice", "--lora", "style:heavy"], "is not a number"),
    (["x", "--owner", "nobody"], "No user named 'nobody'"),
    (["x"], "--owner USERNAME"),
])
def test_bad_input_fails_with_the_reason_and_creates_nothing(user, registry_loras, args, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        _run(*args)
    assert not GenerationJob.objects.exists()


def test_a_failed_generation_exits_non_zero(transactional_db, user, base_model):
    base_model.source = "/nonexistent/model"
    base_model.save()
    with pytest.raises(CommandError, match="failed: Could not load the model"):
        _run("x", "--owner", "alice", "--inline", *FAST_ARGS)
    assert GenerationJob.objects.get().status == JobStatus.FAILED


@pytest.mark.slow
def test_it_inpaints_a_gallery_image_with_a_mask_file_and_runs_a_hires_fix(transactional_db, user, other_user,
                                                                           base_model, ingest, tmp_path):
    from PIL import Image, ImageDraw

    from imagineer.testing import image_bytes

    source = ingest(user, image_bytes("PNG", seed=3, size=(32, 32)), filename="source.png")
    theirs = ingest(other_user, image_bytes("PNG", seed=4, size=(32, 32)), filename="theirs.png")
    mask = Image.new("L", (32, 32), 0)
    ImageDraw.Draw(mask).rectangle((8, 8, 23, 23), fill=255)
    mask.save(tmp_path / "mask.png")

    output = _run("a red square", "--owner", "alice", "--init-image", str(source.pk), "--mask",
                  str(tmp_path / "mask.png"), "--strength", "0.8", "--seed", "2", "--inline", *FAST_ARGS)

    job = GenerationJob.objects.get()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert (job.mode, job.source_image, job.strength) == ("inpaint", source, 0.8)
    path = Path(next(line for line in output.splitlines() if line.startswith("image ")).split(": ", 1)[1])
    params = parse_a1111_parameters(read_png_parameters(path.read_bytes()))
    assert params["fields"]["Denoising strength"] == "0.8" and "Mask hash" in params["fields"]

    output = _run("a red square", "--owner", "alice", "--hires-scale", "2", "--hires-steps", "1",
                  "--hires-strength", "0.5", "--seed", "2", "--inline", *FAST_ARGS)
    hires = GenerationJob.objects.latest("pk")
    assert hires.status == JobStatus.SUCCEEDED and (hires.mode, hires.hires_scale) == ("txt2img", 2.0)
    path = Path(next(line for line in output.splitlines() if line.startswith("image ")).split(": ", 1)[1])
    params = parse_a1111_parameters(read_png_parameters(path.read_bytes()))
    assert params["fields"]["Hires upscale"] == "2" and params["fields"]["Denoising strength"] == "0.5"

    # Another user's private image, a missing mask file, and a strength without a source are refused.
    for args, message in ((["--init-image", str(theirs.pk)], f"no image #{theirs.pk} that you may use"),
                          (["--init-image", str(source.pk), "--mask", str(tmp_path / "none.png")], "--mask"),
                          (["--strength", "0.5"], "--strength needs --init-image"),
                          (["--mask", str(tmp_path / "mask.png")], "--mask needs --init-image")):
        with pytest.raises(CommandError, match=message):
            _run("x", "--owner", "alice", *args, *FAST_ARGS)
    assert GenerationJob.objects.count() == 2
