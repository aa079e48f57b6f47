"""Where a base model's files come from, on whichever machine runs the job.

A base model row is a name plus a source every GPU machine can resolve, never a path of one machine:
- ``stored``: a folder (or one checkpoint file) uploaded once to the artifacts storage under
  ``base-models/<name>/<digest>/`` with a ``manifest.json``; each worker downloads it into its local cache;
- ``folder`` / ``single_file``: a path relative to each machine's MODELS_DIR (the operator puts the same files
  on every GPU machine);
- ``hub``: a hub id, for machines that can reach a hub.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from imagineer.artifacts import (
    artifact_exists,
    artifact_open,
    artifact_save,
    artifact_upload_tree,
    cached_artifact_tree,
)

STORE_PREFIX = "base-models"
MANIFEST = "manifest.json"


class BaseModelUnavailable(Exception):
    """This machine cannot reach the base model's files; the message says what to do."""


def models_dir() -> Path:
    return Path(settings.MODELS_DIR).resolve()


def relative_to_models_dir(path: Path) -> str | None:
    """``path`` relative to MODELS_DIR when it lies inside it (symlinks kept as given), else None."""
    path = Path(path).expanduser().absolute()
    for root in (Path(settings.MODELS_DIR).absolute(), models_dir()):
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            continue
    return None


def in_models_dir(relative: str) -> Path:
    """The local path of a source relative to MODELS_DIR; refuses anything that climbs out of it."""
    if Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise BaseModelUnavailable(f"{relative!r} is not a path relative to MODELS_DIR.")
    return models_dir() / relative


def manifest(path: Path) -> tuple[bytes, str]:
    """(manifest.json bytes, its sha256) for a folder or one file: every file's relative path, size, sha256."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    root = path if path.is_dir() else path.parent
    entries = []
    for file in files:
        digest = hashlib.sha256()
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1024 * 1024), b""):
                digest.update(block)
        entries.append({"path": file.relative_to(root).as_posix(), "size": file.stat().st_size,
                        "sha256": digest.hexdigest()})
    data = json.dumps({"layout": "folder" if path.is_dir() else "single_file", "files": entries},
                      sort_keys=True, indent=1).encode()
    return data, hashlib.sha256(data).hexdigest()


def base_model_upload(*, name: str, path: Path) -> tuple[str, str]:
    """Put a local model folder or checkpoint in the artifacts storage once; returns (key prefix, digest).

    The prefix holds the digest, so the same files give the same prefix (nothing is uploaded again) and other
    files never overwrite what a running job is downloading.
    """
    data, digest = manifest(path)
    prefix = f"{STORE_PREFIX}/{name}/{digest[:16]}"
    if artifact_exists(f"{prefix}/{MANIFEST}"):
        return prefix, digest
    path = Path(path)
    if path.is_dir():
        artifact_upload_tree(path, prefix)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / path.name).symlink_to(path.resolve())
            artifact_upload_tree(Path(tmp), prefix)
    # The manifest goes last: a prefix with a manifest is complete.
    artifact_save(f"{prefix}/{MANIFEST}", data)
    return prefix, digest


def _stored_layout(prefix: str) -> dict:
    try:
        with artifact_open(f"{prefix}/{MANIFEST}") as fh:
            return json.loads(fh.read())
    except FileNotFoundError:
        raise BaseModelUnavailable(f"The stored model {prefix} has no {MANIFEST}: upload it again "
                                   "with `manage.py register_model NAME PATH --upload`.") from None


@contextlib.contextmanager
def local_source(model) -> Iterator[tuple[str, str]]:
    """(local source, source type for the ML library) of a BaseModel row on this machine.

    A stored model comes from this machine's cache (downloaded on first use, kept while the job runs).
    """
    source, source_type = model.source, model.source_type
    if source_type == "stored":
        layout = _stored_layout(source)
        with cached_artifact_tree(source, model.digest) as folder:
            if layout.get("layout") == "single_file":
                yield str(folder / layout["files"][0]["path"]), "single_file"
            else:
                yield str(folder), "folder"
        return
    if source_type in ("folder", "single_file"):
        local = in_models_dir(source)
        if not local.exists():
            raise BaseModelUnavailable(
                f"Base model {model.name}: {source} is not in this machine's MODELS_DIR ({models_dir()}). Put the "
                f"same files there on every GPU machine, or upload them once: "
                f"`manage.py register_model {model.name} <path> --upload`."
            )
        yield str(local), source_type
        return
    yield source, source_type
