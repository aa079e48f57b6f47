"""Job artifacts: files a job writes that other machines read (logs now; training outputs next).

They live in ``STORAGES["artifacts"]`` under a key such as ``scrapes/<id>/log.txt``: a folder on one machine,
the media bucket under ``artifacts/`` when S3 is configured. Rows store the key, never a path: the web, the
CPU workers and the GPU workers may each be another machine with its own disk. A job works on local files
and uploads them; ``PeriodicUpload`` keeps a growing file (a log) readable on the web while the job runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages

logger = logging.getLogger(__name__)


def artifact_storage() -> Storage:
    return storages["artifacts"]


def artifact_save(key: str, content: File | bytes) -> str:
    """Store ``content`` under ``key``, replacing what was there; returns the key."""
    storage = artifact_storage()
    name = storage.save(key, content if isinstance(content, File) else ContentFile(content))
    if name != key:
        # A storage that renames instead of overwriting would leave every upload of a growing log behind.
        storage.delete(name)
        raise ImproperlyConfigured(
            f'STORAGES["artifacts"] stored {key!r} as {name!r}: it must overwrite '
            "(allow_overwrite for FileSystemStorage, file_overwrite for S3Storage)."
        )
    return key


def artifact_upload(path: Path, key: str) -> str:
    """Copy the local file ``path`` to ``key``."""
    with Path(path).open("rb") as fh:
        return artifact_save(key, File(fh, name=Path(path).name))


def artifact_exists(key: str) -> bool:
    return bool(key) and artifact_storage().exists(key)


def artifact_open(key: str) -> File:
    """The stored file, opened for reading in binary; FileNotFoundError when there is none."""
    storage = artifact_storage()
    if not key or not storage.exists(key):
        raise FileNotFoundError(key)
    return storage.open(key, "rb")


def artifact_delete(key: str) -> None:
    """Remove ``key`` if it is stored; a missing key is fine, a failing store is logged, never raised."""
    if not key:
        return
    try:
        artifact_storage().delete(key)
    except Exception:  # clean-up must not fail a delete; check_storage-style tools can find leftovers
        logger.warning("could not delete artifact %s", key, exc_info=True)


class PeriodicUpload:
    """Uploads a local file that a job keeps appending to (a log) to ``key``, at most every ``every`` seconds.

    Call ``tick()`` often from the job's loop and ``final()`` once the file is complete. An upload happens only
    when the file changed; a slow store stretches the interval (an upload takes at most about a tenth of the
    time), and a failed periodic upload is logged and tried again later, so the store never stops the job.
    ``on_uploaded(key)`` runs after the first successful upload (record the key on the row then, so the
    page never links to a log that is not stored yet).
    """

    def __init__(self, path: Path, key: str, *, every: float, on_uploaded: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.key, self.every = Path(path), key, every
        self.on_uploaded = on_uploaded
        self.clock = clock
        self.uploaded = False
        self._last_at = clock()
        self._wait = every
        self._last_seen: tuple[int, int] | None = None

    def tick(self) -> None:
        if self.clock() - self._last_at < self._wait:
            return
        try:
            self._upload()
        except Exception:
            logger.warning("periodic upload of %s to %s failed; trying again later", self.path, self.key,
                           exc_info=True)

    def final(self) -> None:
        """The last upload, of the complete file; raises what the store raises."""
        self._upload()

    def _upload(self) -> None:
        started = self.clock()
        self._last_at = started
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return
        seen = (stat.st_size, stat.st_mtime_ns)
        if seen == self._last_seen:
            return
        artifact_upload(self.path, self.key)
        self._wait = max(self.every, 10 * (self.clock() - started))
        if not self.uploaded and self.on_uploaded is not None:
            self.on_uploaded(self.key)  # if this fails, the next tick uploads and tries again
        self.uploaded = True
        self._last_seen = seen
