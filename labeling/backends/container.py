"""`claude-docker`: label a batch by running the Claude Code CLI in a throw-away container.

Per batch: the batch's images are copied into a fresh temp dir (so the container sees only
those files), mounted read-only at /images; the CLI runs non-interactively with
`--output-format json` under a non-root user, no capabilities, no-new-privileges, a read-only
root filesystem, memory/CPU/pid limits and a timeout. The container is removed whatever happens.

The engine is whatever DOCKER_HOST points at (Docker, or podman's Docker-compatible API); it must
share this machine's filesystem, since the images are bind-mounted from a local temp dir.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
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
# The entrypoint copies the read-only credentials from here into the tmpfs $HOME/.claude.
CREDENTIALS_MOUNT = "/claude-credentials"
DEFAULT_USER = "1000:1000"

# Read-only tools are enough to look at the images; everything else is refused outright.
ALLOWED_TOOLS = "Read,Glob,LS"
DISALLOWED_TOOLS = "Bash,Edit,MultiEdit,Write,NotebookEdit,WebFetch,WebSearch,Task"

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
    import docker

    for attempt in range(2):
        try:
            container.remove(force=True)
            return True
        except docker.errors.NotFound:
            return True
        except Exception as exc:  # the engine may be briefly busy killing it; try once more
            if attempt:
                logger.error("could not remove labeler container %s: %s", getattr(container, "id", "?"), exc)
            time.sleep(0.2)
    return False


class ContainerBackend:
    name = "claude-docker"

    def __init__(
        self,
        *,
        image: str | None = None,
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

        network_mode: None uses the engine's default network (the real Claude needs to reach the
        API); "none" cuts the container off. environment/labels are added to the container's own;
        environment also wins over LABEL_CONTAINER_ENV.
        work_dir: where batch temp dirs are made; must be visible to the engine.
        """
        from django.conf import settings

        self.image = image or settings.LABEL_CONTAINER_IMAGE
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
        import docker

        try:
            return client.images.get(self.image)
        except docker.errors.ImageNotFound:
            raise BackendUnavailable(
                f"The labeler image {self.image!r} is not in the container engine. Build it with: "
                f"docker build -t {self.image} labeling/container"
            )
        except docker.errors.APIError as exc:
            raise BackendUnavailable(f"Could not look up the labeler image {self.image!r}: {exc}")

    def _auth(self) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
        """Volumes and environment that let the CLI log in: the credentials file, else the API key."""
        # Only the credentials file is mounted, not the whole dir: ~/.claude also holds the
        # user's Claude Code transcripts and settings, which the labeler has no business seeing.
        credentials = self.credentials_dir / CREDENTIALS_FILE if self.credentials_dir else None
        if credentials is not None and credentials.is_file():
            return {str(credentials): {"bind": f"{CREDENTIALS_MOUNT}/{CREDENTIALS_FILE}", "mode": "ro"}}, {}
        if self.api_key:
            return {}, {"ANTHROPIC_API_KEY": self.api_key}
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
        volumes, auth_env = self._auth()
        client = self._connect()
        image = self._image(client)
        outcomes: dict[int, LabelOutcome] = {}
        batch_dir = Path(tempfile.mkdtemp(prefix="imagineer-label-", dir=self.work_dir))
        try:
            staged = self._stage(images, batch_dir, outcomes)
            if not staged:
                return outcomes
            if should_stop():
                return fill_missing(images, outcomes, LabelError("cancelled before labelling", ERROR_CANCELLED))
            volumes = {str(batch_dir): {"bind": IMAGES_DIR, "mode": "ro"}, **volumes}
            outcomes.update(self._run(client, image, staged, volumes, auth_env, should_stop))
        finally:
            shutil.rmtree(batch_dir, ignore_errors=True)
        return fill_missing(images, outcomes, LabelError("no outcome for this image", ERROR_BACKEND))

    def _stage(self, images: list[ImageInput], batch_dir: Path, outcomes: dict[int, LabelOutcome]) -> list[ImageInput]:
        # The container user is not us: the dir and copies must be world-readable (never writable).
        batch_dir.chmod(0o755)
        staged = []
        for image in images:
            target = batch_dir / image.key
            try:
                shutil.copyfile(image.path, target)
                target.chmod(0o444)
            except OSError as exc:
                outcomes[image.id] = LabelError(
                    f"image file {image.path} cannot be read: {exc.strerror or exc}", ERROR_IMAGE
                )
                continue
            staged.append(image)
        return staged

    def _command(self, staged: list[ImageInput]) -> list[str]:
        command = [
            "claude", "-p", build_file_prompt([image.key for image in staged], directory=IMAGES_DIR),
            "--output-format", "json",
            "--allowedTools", ALLOWED_TOOLS,
            "--disallowedTools", DISALLOWED_TOOLS,
        ]
        if self.model:
            command += ["--model", self.model]
        return command

    def _run(self, client, image, staged, volumes, auth_env, should_stop) -> dict[int, LabelOutcome]:
        import docker
        import requests

        def every(message: str, code: str) -> dict[int, LabelOutcome]:
            return {item.id: LabelError(message, code) for item in staged}

        labels = {**self.labels, CONTAINER_LABEL: CONTAINER_LABEL_VALUE}
        environment = {**self.environment, **auth_env, "HOME": CONTAINER_HOME}
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
                volumes=volumes,
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
