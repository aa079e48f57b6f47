"""Training checkpoints on disk: atomic writes, retention, and the RNG states a resume restores.

Layout: ``<output_dir>/checkpoints/step-000123/`` holding ``pytorch_lora_weights.safetensors`` (a usable
LoRA on its own), ``optimizer.pt``, ``scheduler.pt``, ``rng.pt`` and ``state.json``. state.json is written
last inside a temporary folder that is then renamed, so a folder named step-* is always complete.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_TEMP_PREFIX = ".tmp-"


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"step-{step:06d}"


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def read_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())


def write_checkpoint(
    output_dir: Path, step: int, *, write_files: Callable[[Path], None], state: dict[str, Any], keep: int
) -> Path:
    """Write a checkpoint through a temporary folder, rename it into place, then keep only the last `keep`."""
    root = Path(output_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}step-{step:06d}-", dir=root))
    final = checkpoint_dir(output_dir, step)
    try:
        write_files(tmp)
        (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prune_checkpoints(output_dir, keep)
    return final


def prune_checkpoints(output_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` checkpoints; return what was deleted."""
    doomed = list_checkpoints(output_dir)[:-keep] if keep > 0 else []
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def remove_temporary(output_dir: Path) -> None:
    """Clear half-written checkpoint folders a crashed process left behind."""
    root = Path(output_dir) / CHECKPOINTS
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(_TEMP_PREFIX):
                shutil.rmtree(child, ignore_errors=True)


def rng_state() -> tuple[dict[str, Any], dict[str, Any]]:
    """(JSON-safe python/numpy states, torch tensors) so each goes in a format that loads without pickle."""
    # numpy and torch own the states being captured.
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    plain = {
        "python": [version, list(internal), gauss],
        "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
    }
    tensors: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state_all()
    return plain, tensors


def restore_rng_state(plain: dict[str, Any], tensors: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = plain["numpy"]
    np.random.set_state((np_name, np.asarray(np_keys, dtype=np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available() and len(tensors["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(tensors["cuda"])
