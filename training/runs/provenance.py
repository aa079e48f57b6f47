"""Provenance of a run's dataset: the frozen snapshot's per-image provenance, the warning the run page shows,
and the summary of sources written into the LoRA files' safetensors metadata.

The summary is stamped into a finished file's header by rewriting the header only (no torch, no tensor
copy in memory), so the trainer's own metadata (kohya's ``ss_*`` fields) stays as it wrote it.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gallery.provenance import provenance_summary

METADATA_KEY = "imagineer_sources"
MAX_DOMAINS = 50
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


def snapshot_summary(dataset: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts over a run snapshot; entries frozen before provenance was kept count as unchecked, unknown."""
    return provenance_summary(entry.get("provenance") or {} for entry in dataset)


def snapshot_warning(summary: Mapping[str, Any]) -> str:
    """The run page's warning, or "" when every image has a known licence and no opt-out."""
    parts = []
    if summary.get("opted_out"):
        parts.append(f"{summary['opted_out']} image(s) whose publisher opted out of AI use when they were fetched")
    if summary.get("unknown_licence"):
        parts.append(f"{summary['unknown_licence']} image(s) without a known licence")
    return ("This run's dataset holds " + " and ".join(parts) + ".") if parts else ""


def sources_metadata(dataset: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The LoRA's metadata entry: a JSON summary of where its training images came from."""
    summary = snapshot_summary(dataset)
    domains = dict(list(summary["domains"].items())[:MAX_DOMAINS])
    value = {**summary, "domains": domains, "domains_total": len(summary["domains"])}
    return {METADATA_KEY: json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)}


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        if size > MAX_HEADER_BYTES:
            raise ValueError(f"{path.name}: the safetensors header is too large")
        header = json.loads(fh.read(size))
    return dict(header.get("__metadata__") or {})


def _stamped_header(header_bytes: bytes, extra: Mapping[str, str]) -> bytes:
    """The length prefix and JSON header of a safetensors file, with `extra` added to its ``__metadata__``."""
    header = json.loads(header_bytes)
    metadata = dict(header.get("__metadata__") or {})
    metadata.update({str(k): str(v) for k, v in extra.items()})
    header["__metadata__"] = metadata
    raw = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # keep the tensor data 8-byte aligned, as writers do
    return struct.pack("<Q", len(raw)) + raw


def stamp_safetensors_bytes(data: bytes, extra: Mapping[str, str]) -> bytes:
    """`stamp_safetensors_metadata` for a file held in memory."""
    if len(data) < 8:
        raise ValueError("not a safetensors file: too short")
    (size,) = struct.unpack("<Q", data[:8])
    if size > MAX_HEADER_BYTES or 8 + size > len(data):
        raise ValueError("not a safetensors file: bad header length")
    return _stamped_header(data[8:8 + size], extra) + data[8 + size:]


def stamp_safetensors_metadata(path: Path, extra: Mapping[str, str]) -> None:
    """Add string entries to a safetensors file's ``__metadata__``; the tensors are copied byte for byte.

    Offsets in the header are relative to the end of the header, so a longer header needs no other change.
    The new file replaces the old one atomically.
    """
    path = Path(path)
    with open(path, "rb") as src:
        (size,) = struct.unpack("<Q", src.read(8))
        if size > MAX_HEADER_BYTES:
            raise ValueError(f"{path.name}: the safetensors header is too large")
        raw = _stamped_header(src.read(size), extra)
        tmp = path.with_name(f".{path.name}.stamp")
        try:
            with open(tmp, "wb") as dst:
                dst.write(raw)
                shutil.copyfileobj(src, dst, 1024 * 1024)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def stamp_run_sources(run, *paths: Path) -> None:
    """Write the run's source summary into each finished LoRA file (called before they are uploaded)."""
    extra = sources_metadata(run.dataset or [])
    for path in paths:
        if path is not None and Path(path).is_file():
            stamp_safetensors_metadata(Path(path), extra)
