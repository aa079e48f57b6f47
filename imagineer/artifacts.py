"""Job artifacts: files a job writes that other machines read (logs, training outputs, base models).

They live in ``STORAGES["artifacts"]`` under a key such as ``scrapes/<id>/log.txt``: a folder on one machine,
the media bucket under ``artifacts/`` when S3 is configured. Rows store the key, never a path: the web, the
CPU workers and the GPU workers may each be another machine with its own disk. A job works on local files
and uploads them; ``PeriodicUpload`` keeps a growing file (a log) readable on the web while the job runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured, SuspiciousFileOperation
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
    try:
        return bool(key) and artifact_storage().exists(key)
    except SuspiciousFileOperation:  # a key that climbs out of the storage names nothing stored
        return False


def artifact_open(key: str) -> File:
    """The stored file, opened for reading in binary; FileNotFoundError when there is none."""
    if not artifact_exists(key):
        raise FileNotFoundError(key)
    return artifact_storage().open(key, "rb")


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


# --- folders of artifacts (checkpoints, base models) --------------------------------------------------------


def artifact_list(prefix: str) -> list[str]:
    """Every key under ``prefix`` (a folder-like key without a trailing slash), sorted; [] when none."""
    storage = artifact_storage()
    prefix = prefix.rstrip("/")
    found: list[str] = []
    pending = [prefix]
    while pending:
        folder = pending.pop()
        try:
            dirs, files = storage.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue
        found.extend(f"{folder}/{name}" for name in files)
        pending.extend(f"{folder}/{name}" for name in dirs)
    return sorted(found)


def artifact_upload_tree(folder: Path, prefix: str, *, last: str | None = None) -> list[str]:
    """Upload every file under the local ``folder`` to ``prefix/<relative path>``.

    ``last`` (a relative path) is uploaded after all the others: a reader that sees it knows the rest is there
    (a checkpoint's state.json, a model's manifest).
    """
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(folder).as_posix() == last)
    keys = []
    for path in files:
        keys.append(artifact_upload(path, f"{prefix.rstrip('/')}/{path.relative_to(folder).as_posix()}"))
    return keys


def artifact_download_tree(prefix: str, folder: Path) -> list[Path]:
    """Copy every key under ``prefix`` into the local ``folder`` (made if needed), keeping relative paths."""
    prefix = prefix.rstrip("/")
    written = []
    for key in artifact_list(prefix):
        relative = key[len(prefix) + 1:]
        target = Path(folder) / relative
        if ".." in Path(relative).parts:
            raise ValueError(f"refusing the artifact key {key!r}: it leaves {prefix!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with artifact_open(key) as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
        written.append(target)
    return written


def artifact_delete_prefix(prefix: str) -> int:
    """Remove every key under ``prefix``; returns how many. Failures are logged, never raised."""
    keys = artifact_list(prefix) if prefix else []
    for key in keys:
        artifact_delete(key)
    return len(keys)


def artifact_response(key: str, *, filename: str, as_attachment: bool = True, content_type: str | None = None):
    """An HTTP response for a stored artifact: streamed through the web, or (with ARTIFACT_DOWNLOADS=redirect on
    S3) a redirect to a presigned URL valid for a few minutes. Raises Http404 when the key is not stored.

    Callers check access first; this only serves what a job stored under an artifact key, never a path.
    """
    from django.conf import settings
    from django.http import FileResponse, Http404, HttpResponseRedirect

    storage = artifact_storage()
    if not artifact_exists(key):
        raise Http404("That file is not stored (any more).")
    if settings.ARTIFACT_DOWNLOADS == "redirect" and hasattr(storage, "bucket_name"):
        disposition = "attachment" if as_attachment else "inline"
        params = {"ResponseContentDisposition": f'{disposition}; filename="{filename}"'}
        if content_type:
            params["ResponseContentType"] = content_type
        return HttpResponseRedirect(storage.url(key, parameters=params, expire=300))
    response = FileResponse(storage.open(key, "rb"), as_attachment=as_attachment, filename=filename,
                            content_type=content_type)
    response["X-Content-Type-Options"] = "nosniff"
    return response


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


# --- the worker's local cache --------------------------------------------------------------------------------


class ArtifactCache:
    """What a worker pulled from storage (LoRAs, base models), on its own disk, keyed by content hash.

    Entries are ``<root>/<digest>/`` folders, complete once renamed into place. Two jobs (threads or processes)
    that want the same entry take the same file lock, so one downloads and the other waits and reuses it.
    The cache stays under ``max_bytes``: after each new entry the least recently used ones are removed, except
    entries another job holds (a shared lock while ``use`` is open).
    """

    def __init__(self, root: Path, max_bytes: int):
        self.root, self.max_bytes = Path(root), max_bytes

    @contextlib.contextmanager
    def use(self, digest: str, fill: Callable[[Path], None]):
        """Yield the local folder for ``digest``, calling ``fill(folder)`` first when it is not cached yet."""
        if not re.fullmatch(r"[0-9a-f]{16,128}", digest or ""):
            raise ValueError(f"not a content hash: {digest!r}")
        self.root.mkdir(parents=True, exist_ok=True)
        entry = self.root / digest
        added = False
        while True:
            with self._lock(digest, fcntl.LOCK_EX):
                if not entry.is_dir():
                    tmp = Path(tempfile.mkdtemp(prefix=f".fill-{digest[:12]}-", dir=self.root))
                    try:
                        fill(tmp)
                        os.replace(tmp, entry)
                    except BaseException:
                        shutil.rmtree(tmp, ignore_errors=True)
                        raise
                    added = True
                os.utime(entry)  # most recently used
            with self._lock(digest, fcntl.LOCK_SH):
                # Between the two locks another job's eviction may have removed it: then fetch again.
                if not entry.is_dir():
                    continue
                if added:
                    self.evict(keep=digest)
                yield entry
                return

    def evict(self, *, keep: str = "") -> int:
        """Remove least recently used entries until the cache fits; returns how many were removed."""
        entries = []
        for child in self.root.iterdir() if self.root.is_dir() else []:
            if child.is_dir() and not child.name.startswith("."):
                entries.append((child.stat().st_mtime, child, _tree_size(child)))
        total = sum(size for _, _, size in entries)
        removed = 0
        for _, child, size in sorted(entries):
            if total <= self.max_bytes:
                break
            if child.name == keep:
                continue
            lock = self._try_lock(child.name)
            if lock is None:  # another job is using it
                continue
            try:
                shutil.rmtree(child, ignore_errors=True)
                total -= size
                removed += 1
            finally:
                lock.close()
        return removed

    def _lock_path(self, digest: str) -> Path:
        return self.root / f".{digest}.lock"

    @contextlib.contextmanager
    def _lock(self, digest: str, mode: int):
        with self._lock_path(digest).open("a") as handle:
            fcntl.flock(handle, mode)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _try_lock(self, digest: str):
        handle = self._lock_path(digest).open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return handle


def _tree_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def local_cache() -> ArtifactCache:
    from django.conf import settings

    return ArtifactCache(Path(settings.ARTIFACT_CACHE_DIR), settings.ARTIFACT_CACHE_MAX_BYTES)


@contextlib.contextmanager
def cached_artifact(key: str, digest: str):
    """The local path of the stored file ``key`` whose sha256 is ``digest``, from this machine's cache."""
    name = Path(key).name

    def fill(folder: Path) -> None:
        with artifact_open(key) as src, (folder / name).open("wb") as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)
        found = file_sha256(folder / name)
        if found != digest:
            raise ValueError(f"the stored {key} has sha256 {found[:12]}…, not {digest[:12]}… as recorded")

    with local_cache().use(digest, fill) as folder:
        yield folder / name


@contextlib.contextmanager
def cached_artifact_tree(prefix: str, digest: str):
    """The local copy of every key under ``prefix``, cached under ``digest`` (the tree's manifest hash)."""
    with local_cache().use(digest, lambda folder: artifact_download_tree(prefix, folder)) as folder:
        yield folder
