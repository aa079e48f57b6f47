"""A training run's files in the artifacts storage, so any machine can read and continue them.

The worker trains in a local scratch folder (``run.run_dir``) and uploads as it goes:
``runs/<id>/train.log`` (periodically and at the end), ``runs/<id>/samples/…`` (as they are made),
``runs/<id>/checkpoints/step-NNNNNN/…`` (each as it is written, state.json last, the last K kept) and
``runs/<id>/lora/…`` (the finished LoRA in both formats). A resume on another worker downloads the latest
complete checkpoint first, so it continues at that step.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from imagineer.artifacts import (
    artifact_delete_prefix,
    artifact_download_tree,
    artifact_list,
    artifact_upload,
    artifact_upload_tree,
    file_sha256,
)

LOG_NAME = "train.log"
CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"  # the same name training.ml.checkpoints writes last
_STEP_KEY = re.compile(r"/checkpoints/step-(\d+)/(.+)$")


def log_key(run) -> str:
    return f"{run.artifact_prefix}/{LOG_NAME}"


def sample_key(run, relative: str) -> str:
    relative = Path(relative).as_posix()
    if relative.startswith("/") or ".." in Path(relative).parts:
        raise ValueError(f"not a path inside the run: {relative!r}")
    return f"{run.artifact_prefix}/{relative}"


def upload_samples(run, paths: list[Path]) -> list[str]:
    """Upload sample images made in the local run folder; returns their paths relative to the run."""
    relative = [Path(p).relative_to(run.run_dir).as_posix() for p in paths]
    for path, rel in zip(paths, relative, strict=True):
        artifact_upload(Path(path), sample_key(run, rel))
    return relative


def checkpoint_prefix(run, step: int) -> str:
    return f"{run.artifact_prefix}/{CHECKPOINTS}/step-{step:06d}"


def _checkpoint_steps(run) -> tuple[list[int], set[int]]:
    """(complete steps oldest first, every step with any key) from one listing of the run's checkpoints."""
    complete, seen = set(), set()
    for key in artifact_list(f"{run.artifact_prefix}/{CHECKPOINTS}"):
        match = _STEP_KEY.search(key)
        if match:
            step = int(match.group(1))
            seen.add(step)
            if match.group(2) == STATE_FILE:
                complete.add(step)
    return sorted(complete), seen


def stored_checkpoints(run) -> list[int]:
    """Steps of the complete checkpoints in storage (those whose state.json arrived), oldest first."""
    return _checkpoint_steps(run)[0]


def upload_checkpoint(run, step: int, folder: Path, *, keep: int) -> None:
    """Upload one local checkpoint (state.json last), then keep only the newest ``keep`` in storage."""
    artifact_upload_tree(folder, checkpoint_prefix(run, step), last=STATE_FILE)
    prune_checkpoints(run, keep=keep)


def prune_checkpoints(run, *, keep: int) -> int:
    steps, seen = _checkpoint_steps(run)
    doomed = steps[:-keep] if keep > 0 else steps
    # Half-uploaded checkpoints (no state.json) older than the newest complete one are debris of a dead worker.
    debris = [step for step in seen - set(steps) if steps and step < steps[-1]]
    for step in [*doomed, *debris]:
        artifact_delete_prefix(checkpoint_prefix(run, step))
    return len(doomed)


def fetch_latest_checkpoint(run) -> int | None:
    """Make the local run folder hold exactly the newest stored checkpoint; returns its step (None: none)."""
    local = Path(run.run_dir) / CHECKPOINTS
    shutil.rmtree(local, ignore_errors=True)
    steps = stored_checkpoints(run)
    if not steps:
        return None
    step = steps[-1]
    target = local / f"step-{step:06d}"
    artifact_download_tree(checkpoint_prefix(run, step), target)
    return step


def upload_lora(run, path: Path) -> tuple[str, str]:
    """Upload a finished LoRA file; returns (key, sha256)."""
    key = f"{run.artifact_prefix}/lora/{Path(path).name}"
    artifact_upload(Path(path), key)
    return key, file_sha256(Path(path))


def delete_run_artifacts(run) -> int:
    return artifact_delete_prefix(run.artifact_prefix)
