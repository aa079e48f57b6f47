"""The per-file work of `index_images`, runnable in worker processes.

No Django imports here: workers are spawned fresh (never forked from a process holding
database connections) and only read, hash, validate and make derivatives.
"""

from __future__ import annotations

import hashlib
import os

from .imaging import ImageRejected, check_size, inspect_image

_KNOWN_SHA256: frozenset[str] = frozenset()
_LIMITS: dict = {}


def init_worker(known: frozenset[str], limits: dict) -> None:
    global _KNOWN_SHA256, _LIMITS
    _KNOWN_SHA256, _LIMITS = known, limits


def prepare_file(path: str):
    """(path, status, payload, data): status 'ok' (payload = inspect result), 'known' (payload = sha256)
    or 'rejected' (payload = reason)."""
    try:
        check_size(os.path.getsize(path), _LIMITS["max_bytes"])
        with open(path, "rb") as fh:
            data = fh.read()
        sha256 = hashlib.sha256(data).hexdigest()
        if sha256 in _KNOWN_SHA256:
            return path, "known", sha256, None
        prepared = inspect_image(data, filename=path, derivatives=True, **_LIMITS)
        return path, "ok", prepared, data
    except ImageRejected as exc:
        return path, "rejected", str(exc), None
    except OSError as exc:
        return path, "rejected", f"could not read the file ({exc.strerror or exc})", None
