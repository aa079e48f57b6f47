"""`claude-docker`: label a batch by running the Claude Code CLI in a throw-away container.

Per batch, everything goes through the engine's API, never through this machine's filesystem, so
DOCKER_HOST may name a remote engine:
- the container is created (not started) with two anonymous volumes, /images and /claude-credentials;
- the batch's images and the credentials (the `.credentials.json` of a Claude login, else the API key
  as a file, never as an environment variable that `docker inspect` would show) are copied in with
  `put_archive`, owned by root and read-only to the container's unprivileged user;
- the CLI runs non-interactively with `--output-format json`, its only tool `Read`, and only for
  /images (CLI_TOOLS and the rules after it), under a non-root user with no capabilities,
  no-new-privileges, a read-only root filesystem, memory/CPU/pid limits and a timeout;
- its answer comes back through the API (the container's logs), and the container is removed with
  its volumes whatever happens.

The image may be pinned by digest (`name@sha256:...` in IMAGINEER_LABEL_IMAGE, or
IMAGINEER_LABEL_IMAGE_DIGEST): it is verified before every batch and a mismatch refuses to run.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .base import (
    ERROR_BACKEND,
    ERROR_CANCELLED,
    ERROR_IMAGE,
    ERROR_TIMEOUT,
    BackendUnavailable,
    ImageInput,
    LabelError,
    LabelOutcome,
    fill_missing,
)
from .prompt import PROMPT_VERSION, build_file_prompt
from .schema import answer_to_outcomes

logger = logging.getLogger(__name__)

# Every container this backend creates carries this label, so leftovers can be found and removed.
CONTAINER_LABEL = "imagineer.labeler"
CONTAINER_LABEL_VALUE = "claude-docker"
# The Claude Code version baked into the image (see labeling/container/Dockerfile).
VERSION_LABEL = "imagineer.claude-code.version"

IMAGES_DIR = "/images"
CONTAINER_HOME = "/home/claude"
CREDENTIALS_FILE = ".credentials.json"
# The credentials arrive here (a volume filled through the API); the entrypoint copies the login
# into the tmpfs $HOME/.claude and exports the API key file as ANTHROPIC_API_KEY to the CLI alone.
CREDENTIALS_MOUNT = "/claude-credentials"
API_KEY_FILE = "api-key"
DEFAULT_USER = "1000:1000"

# The CLI's tools, as narrow as labeling allows. An image could carry a prompt injection, so the
# model must not be able to read the credentials (the login copy in ~/.claude, the key file, the
# process environment under /proc) and copy them into a caption:
# - `--tools Read`: Read is the only built-in tool that exists in the session (no Bash, Glob, Grep,
#   web, agents);
# - `--permission-mode dontAsk`: a tool call that no allow rule names is refused, never prompted;
# - the one allow rule is Read under /images (`//` starts an absolute path in a permission rule);
# - deny rules, which beat any allow rule, name the credential paths and every tool besides Read.
# The image's managed settings (labeling/container/managed-settings.json) say the same and also
# turn on blockReadsOutsideWorkingDirectories; managed settings cannot be overridden.
CLI_TOOLS = "Read"
CLI_PERMISSION_MODE = "dontAsk"
ALLOWED_TOOLS = f"Read(/{IMAGES_DIR}/**)"
DISALLOWED_TOOLS = ",".join([
    "Bash", "Edit", "MultiEdit", "Write", "NotebookEdit", "WebFetch", "WebSearch", "Task", "Agent",
    "Glob", "Grep", "LS", "Skill",
    f"Read(/{CREDENTIALS_MOUNT}/**)", "Read(~/**)", f"Read(/{CONTAINER_HOME}/**)", "Read(//proc/**)",
    "Read(//tmp/**)",
])

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_DONE_STATES = {"exited", "dead", "stopped"}
_MAX_OUTPUT_PREVIEW = 300
# Phrases the CLI uses when the login or key is refused: no batch can succeed then.
_AUTH_FAILURES = ("invalid api key", "/login", "oauth token has expired", "authentication_error")


def _format_seconds(seconds: float) -> str:
    return f"{seconds:g}"


def _tail(data: bytes | str, limit: int = _MAX_OUTPUT_PREVIEW) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    text = " ".join(text.split())
    return text if len(text) <= limit else "…" + text[-limit:]


def _parse_created(value: str) -> datetime | None:
    # Engines report RFC 3339 with nanoseconds ("2026-11-21T12:15:03.123456789Z"); Python wants micro.
    try:
        head, _, rest = value.partition(".")
        if rest:
            digits = "".join(ch for ch in rest if ch.isdigit())
            zone = rest[len(digits):] or "Z"
            value = f"{head}.{digits[:6]}{zone}"
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None


def docker_client(base_url: str, *, timeout: int = 60):
    """A Docker SDK client for an explicit engine URL (the test helpers use this: docker stays in here)."""
    import docker

    return docker.DockerClient(base_url=base_url, timeout=timeout)


def connect(timeout: float = 30):
    """A Docker SDK client for DOCKER_HOST, or BackendUnavailable saying why not."""
    # docker is imported here only: the web process never needs it.
    import docker

    host = os.environ.get("DOCKER_HOST") or "the default socket (DOCKER_HOST is not set)"
    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except Exception as exc:  # DockerException, requests' ConnectionError, a missing socket...
        raise BackendUnavailable(
            f"No container engine is reachable at {host}: {exc}. Start Docker, or podman's API service "
            "(podman system service), and point DOCKER_HOST at it."
        ) from exc
    return client


def remove_stale_containers(*, older_than: float = 0.0, now: datetime | None = None, client=None) -> int:
    """Remove labeler containers (ours, by label) created more than `older_than` seconds before `now`.

    For a reaper: a worker killed mid-batch cannot run its own clean-up. `now` (default: the call's
    time) lets a caller that decided from the database first spare containers started after it looked.
    """
    client = client or connect()
    removed = 0
    now = now or datetime.now(UTC)
    for container in client.containers.list(all=True, filters={"label": CONTAINER_LABEL}):
        created = _parse_created(container.attrs.get("Created", ""))
        if created is not None and (now - created).total_seconds() < older_than:
            continue
        if _remove(container):
            removed += 1
    return removed


def _remove(container) -> bool:
    """Remove a container and its anonymous volumes (they hold the batch's images and credentials)."""
    import docker

    for attempt in range(2):
        try:
            container.remove(force=True, v=True)
            return True
        except docker.errors.NotFound:
            return True
        except Exception as exc:  # the engine may be briefly busy killing it; try once more
            if attempt:
                logger.error("could not remove labeler container %s: %s", getattr(container, "id", "?"), exc)
            time.sleep(0.2)
    return False


def split_pinned_image(reference: str, digest: str = "") -> tuple[str, str | None]:
    """(`reference` without any `@sha256:...`, the pinned digest or None) from the two image settings.

    Raises BackendUnavailable when a digest is malformed or the two settings pin different digests.
    """
    name, at, in_reference = reference.partition("@")
    pins = {value for value in (in_reference if at else "", digest.strip()) if value}
    for value in pins:
        if not _DIGEST.fullmatch(value):
            raise BackendUnavailable(
                f"The labeler image digest {value!r} is not of the form sha256:<64 hex digits> "
                "(IMAGINEER_LABEL_IMAGE=name@sha256:..., or IMAGINEER_LABEL_IMAGE_DIGEST)."
            )
    if len(pins) > 1:
        raise BackendUnavailable(
            f"IMAGINEER_LABEL_IMAGE pins {in_reference} but IMAGINEER_LABEL_IMAGE_DIGEST pins {digest.strip()}; "
            "keep one of them, or make them agree."
        )
    return name, (pins.pop() if pins else None)


def image_digests(image) -> set[str]:
    """Every digest that names this image: its id (the config digest, what `docker build` prints) and
    the manifest digests it was pushed or pulled under (RepoDigests, what a registry shows)."""
    digests = {image.id}
    for repo_digest in image.attrs.get("RepoDigests") or []:
        _, _, digest = repo_digest.partition("@")
        if digest:
            digests.add(digest)
    return digests


def _tar_entry(name: str, size: int, mode: int) -> tarfile.TarInfo:
    # Owned by root and not writable: the container user (1000, no capabilities) can only read them.
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = int(time.time())
    return info


@contextlib.contextmanager
def _unpadded_tar(handle):
    """A tar written to `handle` that ends right after its end-of-archive marker (two zero blocks).

    Python pads a tar with zero blocks up to a 10 KiB record. Podman's archive endpoint pipes the
    upload into an extractor that stops reading at the marker, so that padding may be written into
    a closed pipe: a spurious 500 "passing bulk input to subprocess: write |1: broken pipe"
    (containers/buildah#6573). Without the padding there is nothing left to write when it stops.
    """
    start = handle.tell()
    tar = tarfile.open(fileobj=handle, mode="w", format=tarfile.GNU_FORMAT)
    try:
        yield tar
    finally:
        tar.close()
    # close() counted the entries and the two end blocks in `offset`, then wrote the padding.
    handle.truncate(start + tar.offset)
    handle.seek(start + tar.offset)


class ContainerBackend:
    name = "claude-docker"

    def __init__(
        self,
        *,
        image: str | None = None,
        image_digest: str | None = None,
        credentials_dir: str | Path | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        memory: str | None = None,
        cpus: float | None = None,
        pids: int | None = None,
        network_mode: str | None = None,
        user: str = DEFAULT_USER,
        model: str | None = None,
        environment: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        work_dir: str | Path | None = None,
        client=None,
    ) -> None:
        """Options default to the LABEL_CONTAINER_* settings.

        image: a name, `name@sha256:...` to pin it, or an image id. image_digest: a pin given apart.
        network_mode: None uses the engine's default network (the real Claude needs to reach the
        API); "none" cuts the container off. environment/labels are added to the container's own;
        environment also wins over LABEL_CONTAINER_ENV.
        work_dir: where the batch's archive is spooled on this machine (in a private 0700 temp dir);
        the engine never reads it: the archive goes to the engine through its API.
        """
        from django.conf import settings

        self.image = image or settings.LABEL_CONTAINER_IMAGE
        self.image_digest = (
            image_digest if image_digest is not None else settings.LABEL_CONTAINER_IMAGE_DIGEST
        )
        credentials_dir = credentials_dir if credentials_dir is not None else settings.LABEL_CLAUDE_CREDENTIALS
        self.credentials_dir = Path(credentials_dir).expanduser() if credentials_dir else None
        self.api_key = api_key if api_key is not None else (settings.ANTHROPIC_API_KEY or None)
        self.timeout = float(timeout if timeout is not None else settings.LABEL_CONTAINER_TIMEOUT)
        self.memory = memory or settings.LABEL_CONTAINER_MEMORY
        self.cpus = float(cpus if cpus is not None else settings.LABEL_CONTAINER_CPUS)
        self.pids = int(pids if pids is not None else settings.LABEL_CONTAINER_PIDS)
        self.network_mode = network_mode if network_mode is not None else (settings.LABEL_CONTAINER_NETWORK or None)
        self.user = user
        self.model = model
        # LABEL_CONTAINER_ENV (IMAGINEER_LABEL_ENV, e.g. a proxy for the CLI) under the explicit option.
        self.environment = {**settings.LABEL_CONTAINER_ENV, **(environment or {})}
        self.labels = dict(labels or {})
        self.work_dir = str(work_dir) if work_dir else None
        self._client = client

    # -- availability ---------------------------------------------------------------------------

    def _connect(self):
        if self._client is None:
            self._client = connect()
        return self._client

    def _image(self, client):
        """The labeler image, verified against its pinned digest when there is one."""
        import docker

        name, pinned = split_pinned_image(self.image, self.image_digest or "")
        # A reference with a digest finds an image pulled by that digest; a built one has only its tag.
        candidates = [reference for reference in dict.fromkeys((self.image, name)) if reference]
        image, failure = None, None
        for candidate in candidates:
            try:
                image = client.images.get(candidate)
                break
            except docker.errors.ImageNotFound:
                continue
            except docker.errors.APIError as exc:  # an engine may reject a digest it cannot resolve
                failure = exc
        if image is None and failure is not None:
            raise BackendUnavailable(f"Could not look up the labeler image {self.image!r}: {failure}")
        if image is None:
            raise BackendUnavailable(
                f"The labeler image {name!r} is not in the container engine. Build it with: "
                f"docker build -t {name} labeling/container"
            )
        if pinned and pinned not in image_digests(image):
            raise BackendUnavailable(
                f"The labeler image {name!r} does not match its pinned digest {pinned}: the engine has "
                f"{', '.join(sorted(image_digests(image)))}. Refusing to run it. Build or pull the pinned image, "
                "or update the pin (IMAGINEER_LABEL_IMAGE=name@sha256:... or IMAGINEER_LABEL_IMAGE_DIGEST)."
            )
        return image

    def _auth(self) -> dict[str, bytes]:
        """The files that let the CLI log in, by name in CREDENTIALS_MOUNT: the login file, else the API key."""
        # Only the credentials file goes in, not the whole dir: ~/.claude also holds the user's
        # Claude Code transcripts and settings, which the labeler has no business seeing.
        credentials = self.credentials_dir / CREDENTIALS_FILE if self.credentials_dir else None
        if credentials is not None and credentials.is_file():
            try:
                return {CREDENTIALS_FILE: credentials.read_bytes()}
            except OSError as exc:
                raise BackendUnavailable(
                    f"The Claude credentials {credentials} cannot be read: {exc.strerror or exc}"
                ) from exc
        if self.api_key:
            return {API_KEY_FILE: self.api_key.encode()}
        where = f"{credentials} does not exist" if credentials else "IMAGINEER_CLAUDE_CREDENTIALS is empty"
        raise BackendUnavailable(
            f"No Claude credentials: {where} (log in once with `claude` on this machine, or set "
            "IMAGINEER_CLAUDE_CREDENTIALS) and ANTHROPIC_API_KEY is not set."
        )

    def check(self) -> None:
        self._auth()
        self._image(self._connect())

    # -- labeling -------------------------------------------------------------------------------

    def label_batch(
        self, images: list[ImageInput], *, should_stop: Callable[[], bool]
    ) -> dict[int, LabelOutcome]:
        if not images:
            return {}
        credentials = self._auth()
        client = self._connect()
        image = self._image(client)
        outcomes: dict[int, LabelOutcome] = {}
        # Private to this worker (mkdtemp makes it 0700): the archive holds users' images.
        batch_dir = Path(tempfile.mkdtemp(prefix="imagineer-label-", dir=self.work_dir))
        try:
            batch_dir.chmod(0o700)
            archive = batch_dir / "images.tar"
            staged = self._pack(images, archive, outcomes)
            if not staged:
                return outcomes
            if should_stop():
                return fill_missing(images, outcomes, LabelError("cancelled before labelling", ERROR_CANCELLED))
            outcomes.update(self._run(client, image, staged, archive, credentials, should_stop))
        finally:
            shutil.rmtree(batch_dir, ignore_errors=True)
        return fill_missing(images, outcomes, LabelError("no outcome for this image", ERROR_BACKEND))

    @staticmethod
    def _pack(images: list[ImageInput], archive: Path, outcomes: dict[int, LabelOutcome]) -> list[ImageInput]:
        """Write the readable images into one tar (0600), named by their keys; the rest fail alone."""
        staged = []
        fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle, _unpadded_tar(handle) as tar:
            for image in images:
                try:
                    source = open(image.path, "rb")  # noqa: SIM115 - closed just below
                except OSError as exc:
                    outcomes[image.id] = LabelError(
                        f"image file {image.path} cannot be read: {exc.strerror or exc}", ERROR_IMAGE
                    )
                    continue
                with source:
                    tar.addfile(_tar_entry(image.key, os.fstat(source.fileno()).st_size, 0o444), source)
                staged.append(image)
        return staged

    @staticmethod
    def _credentials_tar(files: dict[str, bytes]) -> bytes:
        # Built in memory: the credentials are never written to this machine's disk.
        buffer = io.BytesIO()
        with _unpadded_tar(buffer) as tar:
            for name, data in files.items():
                tar.addfile(_tar_entry(name, len(data), 0o444), io.BytesIO(data))
        return buffer.getvalue()

    def _command(self, staged: list[ImageInput]) -> list[str]:
        command = [
            "claude", "-p", build_file_prompt([image.key for image in staged], directory=IMAGES_DIR),
            "--output-format", "json",
            "--tools", CLI_TOOLS,
            "--permission-mode", CLI_PERMISSION_MODE,
            "--allowedTools", ALLOWED_TOOLS,
            "--disallowedTools", DISALLOWED_TOOLS,
        ]
        if self.model:
            command += ["--model", self.model]
        return command

    def _mounts(self, labels: dict[str, str]) -> list:
        from docker.types import Mount

        # Anonymous volumes made by the engine with the container and removed with it (remove v=True):
        # nothing of this machine is mounted, so a remote DOCKER_HOST works. They must be writable for
        # put_archive; the files in them are root's and read-only, and the container user has no
        # capabilities, so the CLI cannot change them.
        return [
            Mount(target=target, source=None, type="volume", read_only=False, labels=labels)
            for target in (IMAGES_DIR, CREDENTIALS_MOUNT)
        ]

    def _run(self, client, image, staged, archive: Path, credentials, should_stop) -> dict[int, LabelOutcome]:
        import docker
        import requests

        def every(message: str, code: str) -> dict[int, LabelOutcome]:
            return {item.id: LabelError(message, code) for item in staged}

        labels = {**self.labels, CONTAINER_LABEL: CONTAINER_LABEL_VALUE}
        # No credentials here: the container's environment is visible to anyone who can inspect it.
        environment = {**self.environment, "HOME": CONTAINER_HOME}
        for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"):
            environment.pop(name, None)
        name = f"imagineer-label-{uuid.uuid4().hex[:12]}"
        container = None
        try:
            container = client.containers.create(
                image.id,
                command=self._command(staged),
                name=name,
                labels=labels,
                environment=environment,
                user=self.user,
                working_dir=IMAGES_DIR,
                mounts=self._mounts({CONTAINER_LABEL: CONTAINER_LABEL_VALUE}),
                read_only=True,
                # the container's own /tmp and $HOME (a tmpfs inside it, not this machine's /tmp)
                tmpfs={"/tmp": "rw,size=64m,mode=1777", CONTAINER_HOME: "rw,size=128m,mode=1777"},  # noqa: S108
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                mem_limit=self.memory,
                nano_cpus=int(self.cpus * 1e9),
                pids_limit=self.pids,
                network_mode=self.network_mode,
                detach=True,
            )
            # Into the created, not yet started, container: the CLI never runs without its files.
            if not container.put_archive(CREDENTIALS_MOUNT, self._credentials_tar(credentials)):
                return every("the container engine refused the credentials archive", ERROR_BACKEND)
            with open(archive, "rb") as handle:
                if not container.put_archive(IMAGES_DIR, handle):
                    return every("the container engine refused the images archive", ERROR_BACKEND)
            container.start()
            deadline = time.monotonic() + self.timeout
            interval = 0.05
            while True:
                container.reload()
                if container.status in _DONE_STATES:
                    break
                if should_stop():
                    return every("cancelled while the labeler was running", ERROR_CANCELLED)
                if time.monotonic() >= deadline:
                    return every(f"timed out after {_format_seconds(self.timeout)} s", ERROR_TIMEOUT)
                time.sleep(interval)
                interval = min(interval * 1.5, 0.5)
            state = container.attrs.get("State", {})
            stdout = container.logs(stdout=True, stderr=False)
            stderr = container.logs(stdout=False, stderr=True)
        except docker.errors.APIError as exc:
            return every(f"the labeler container failed to run: {exc.explanation or exc}", ERROR_BACKEND)
        except requests.exceptions.RequestException as exc:  # refused, reset, or the engine stopped answering
            raise BackendUnavailable(f"Lost the connection to the container engine: {exc}") from exc
        finally:
            if container is None:  # create() may have failed after the engine made it
                try:
                    container = client.containers.get(name)
                except Exception:  # noqa: S110 - NotFound (the usual case) or the engine is gone
                    pass
            if container is not None:
                _remove(container)
        return self._interpret(staged, state, stdout, stderr, image)

    def _interpret(self, staged, state: dict[str, Any], stdout: bytes, stderr: bytes, image) -> dict[int, LabelOutcome]:
        def every(message: str) -> dict[int, LabelOutcome]:
            return {item.id: LabelError(message, ERROR_BACKEND) for item in staged}

        exit_code = state.get("ExitCode")
        envelope = _parse_cli_output(stdout.decode("utf-8", "replace"))
        if envelope is None:
            if state.get("OOMKilled"):
                return every(f"the labeler ran out of memory (limit {self.memory})")
            detail = _tail(stderr) or _tail(stdout) or "no output"
            if exit_code:
                return every(f"the labeler exited with code {exit_code}: {detail}")
            return every(f"the Claude CLI output is not the expected JSON result: {_tail(stdout) or 'no output'}")

        result = envelope.get("result")
        if envelope.get("is_error") or envelope.get("subtype") != "success":
            detail = _tail(result if isinstance(result, str) else json.dumps(result)) if result else "no details"
            if isinstance(result, str) and any(marker in result.lower() for marker in _AUTH_FAILURES):
                raise BackendUnavailable(f"Claude refused the credentials: {detail}")
            return every(f"the Claude CLI reported an error ({envelope.get('subtype') or 'unknown'}): {detail}")
        if not isinstance(result, str):
            return every("the Claude CLI result has no answer text")

        cli_version = (image.labels or {}).get(VERSION_LABEL) or image.short_id.removeprefix("sha256:")
        return answer_to_outcomes(
            result, staged, model=_model_name(envelope, self.model),
            version=f"claude-code-{cli_version}+prompt-{PROMPT_VERSION}",
        )


def _parse_cli_output(text: str) -> dict[str, Any] | None:
    """The CLI's result object: the whole stdout, or failing that its last JSON line."""
    text = text.strip()
    candidates = [text] + [line.strip() for line in reversed(text.splitlines()) if line.strip().startswith("{")]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("type") == "result":
            return value
    return None


def _model_name(envelope: dict[str, Any], requested: str | None) -> str:
    usage = envelope.get("modelUsage")
    if isinstance(usage, dict) and usage:
        def output_tokens(name: str) -> float:
            entry = usage.get(name)
            return entry.get("outputTokens", 0) if isinstance(entry, dict) else 0

        return max(usage, key=output_tokens)
    return requested or "claude-code"
