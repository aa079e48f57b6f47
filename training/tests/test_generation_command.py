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
