"""A private podman API service for tests: its own storage, config and socket under one temp dir.

Nothing is shared with other podman users on the machine (images, containers, locks, events),
so parallel test sessions cannot see each other's containers. Settings that make podman 4.3
work on these machines (see /work/shared/VERIFIED.md): the runc runtime, the cgroupfs cgroup
manager and no default ulimits. vfs storage needs no kernel mounts, so nothing is left mounted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .image import busybox_problem

CONTAINERS_CONF = """\
[containers]
default_ulimits = []
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{workdir}/events.log"
tmp_dir = "{workdir}/tmp"
lock_type = "file"
"""

STORAGE_CONF = """\
[storage]
driver = "vfs"
graphroot = "{workdir}/storage"
runroot = "{workdir}/run"
"""


def podman_problem() -> str | None:
    """Why the container tests cannot run here, or None when they can."""
    missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    if missing:
        return (f"{' and '.join(missing)} not installed; the container tests need podman, runc and busybox-static "
                "(scripts/setup.sh --test installs them as root)")
    if os.geteuid() != 0:
        return "the container tests run a rootful podman service and need root"
    return busybox_problem()


@dataclass
class PodmanService:
    workdir: Path
    process: subprocess.Popen
    env: dict[str, str] = field(repr=False)

    @property
    def socket(self) -> Path:
        return self.workdir / "podman.sock"

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket}"

    def client(self, timeout: int = 60):
        from labeling.backends.container import docker_client

        return docker_client(self.base_url, timeout=timeout)

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return (self.workdir / "service.log").read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Remove every container, stop the service and delete its storage."""
        if self.process.poll() is None:
            client = self.client(timeout=30)
            try:
                for container in client.containers.list(all=True):
                    container.remove(force=True)
            except Exception:  # noqa: S110 - the service may be unhealthy already; its storage goes anyway
                pass
            finally:
                client.close()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.workdir, ignore_errors=True)


# Runs the service in its own mount namespace with an empty tmpfs over each folder named after the socket:
# an engine on "another machine", which cannot see this one's files (what a remote DOCKER_HOST is like).
_HIDING_SERVICE = (
    'set -e; socket="$1"; shift; '
    'for folder in "$@"; do mount -t tmpfs -o size=1m,mode=0755 imagineer-hidden "$folder"; done; '
    'exec podman system service --time=0 "unix://$socket"'
)


def start_podman_service(
    workdir: Path | None = None, *, timeout: float = 60, hidden: tuple[Path, ...] | list[Path] = ()
) -> PodmanService:
    """Start `podman system service` on a unix socket in `workdir` and wait until it answers.

    hidden: folders the engine must not see (each covered by an empty tmpfs in the service's own mount
    namespace, made with `unshare -m`), so tests can show that nothing reaches it through the filesystem.
    """
    # A short path: unix socket paths are limited to about 100 characters.
    workdir = Path(workdir or tempfile.mkdtemp(prefix="imagineer-podman-", dir="/tmp"))
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    (workdir / "containers.conf").write_text(CONTAINERS_CONF.format(workdir=workdir))
    (workdir / "storage.conf").write_text(STORAGE_CONF.format(workdir=workdir))
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(workdir / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(workdir / "storage.conf"),
        "TMPDIR": str(workdir / "tmp"),
    }
    socket = workdir / "podman.sock"
    command = ["podman", "system", "service", "--time=0", f"unix://{socket}"]
    if hidden:
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _HIDING_SERVICE, "sh",
                   str(socket), *(str(folder) for folder in hidden)]
    with open(workdir / "service.log", "wb") as log:
        process = subprocess.Popen(
            command,
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    service = PodmanService(workdir=workdir, process=process, env=env)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            tail = service.log_tail()
            service.stop()
            raise RuntimeError(f"podman system service exited with code {process.returncode}: {tail}")
        if socket.exists():
            client = service.client(timeout=5)
            try:
                if client.ping():
                    return service
            except Exception:  # noqa: S110 - not listening yet
                pass
            finally:
                client.close()
        if time.monotonic() > deadline:
            tail = service.log_tail()
            service.stop()
            raise RuntimeError(f"podman system service did not answer within {timeout:g} s: {tail}")
        time.sleep(0.1)


def main() -> None:
    """`python -m labeling.testing.podman`: the tests' podman service with the stand-in image, for manual trials."""
    from .image import import_test_image

    problem = podman_problem()
    if problem:
        raise SystemExit(problem)
    service = start_podman_service()
    try:
        client = service.client()
        image = import_test_image(client)
        client.close()
        print(f"export DOCKER_HOST={service.base_url}")  # noqa: T201
        print(f"export IMAGINEER_LABEL_IMAGE={image.tags[0]}")  # noqa: T201
        print("# serving until Ctrl-C", flush=True)  # noqa: T201
        service.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        service.stop()


if __name__ == "__main__":
    main()
