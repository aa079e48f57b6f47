"""Run one crawl in a subprocess and stream its events (parent side; no Scrapy in this process).

The scrape job calls ``run_crawl`` with a config dict (keys: scraping/crawler/config.py), an
``on_event`` callback that receives every event as it arrives (shapes: scraping/crawler/events.py), and a
``should_stop`` callable polled at least every 0.5 s, typically "has the user asked to cancel". The crawl
runs as ``python -m scraping.crawler.run`` so every crawl gets a fresh Twisted reactor and a crash cannot
take the worker down; the config goes in on stdin, events come back as JSON lines on stdout.

Defaults come from the Django settings when they are configured: ``SCRAPE_MAX_RESPONSE_BYTES`` for
``max_response_bytes``, ``SCRAPE_USER_AGENT`` for ``user_agent``, ``GALLERY_MAX_IMAGE_PIXELS`` for
``max_image_pixels``. ``allow_private`` follows ``SCRAPE_ALLOW_PRIVATE``: a config may turn it off but
not on, and ``host_overrides`` (test DNS) are refused unless the setting is on.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scraping.crawler.config import ConfigError, CrawlConfig

__all__ = ["CrawlOutcome", "ConfigError", "run_crawl", "prepare_config"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
POLL_SECONDS = 0.25
# Proxies would route around the crawler's own address checks; the child never needs them.
_PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy"}


@dataclass
class CrawlOutcome:
    """How a crawl ended. ``reason`` is the ``done`` event's reason, or "crashed", "killed", "timeout"."""

    returncode: int | None
    reason: str
    stats: dict[str, Any] = field(default_factory=dict)
    limits_hit: list[str] = field(default_factory=list)
    error: str | None = None
    events: int = 0
    stderr_tail: str = ""

    @property
    def ok(self) -> bool:
        """The crawl ran to an end of its own (finished or a limit), not cancelled, killed or failed."""
        return self.error is None and self.reason not in ("cancelled", "crashed", "killed", "timeout", "error")

    @property
    def cancelled(self) -> bool:
        return self.reason == "cancelled"


def _setting(name: str, default: Any) -> Any:
    try:
        from django.conf import settings

        if settings.configured:
            return getattr(settings, name, default)
    except Exception:  # noqa: BLE001, S110 - without Django, the built-in defaults
        pass
    return default


def prepare_config(config: dict[str, Any], *, log_path: Path | None = None) -> dict[str, Any]:
    """The config the child will get: defaults from settings, the safety rules applied, validated.

    Raises ConfigError (a ValueError) for an invalid config or a safety switch the settings do not allow.
    """
    cfg = dict(config)
    allow_setting = bool(_setting("SCRAPE_ALLOW_PRIVATE", False))
    requested = cfg.get("allow_private")
    if requested and not allow_setting:
        raise ConfigError("allow_private needs settings.SCRAPE_ALLOW_PRIVATE (tests only)")
    cfg["allow_private"] = allow_setting if requested is None else bool(requested)
    if cfg.get("host_overrides") is not None and not allow_setting:
        raise ConfigError("host_overrides need settings.SCRAPE_ALLOW_PRIVATE (tests only)")
    cfg.setdefault("max_response_bytes", _setting("SCRAPE_MAX_RESPONSE_BYTES", 50 * 1024 * 1024))
    cfg.setdefault("user_agent", _setting("SCRAPE_USER_AGENT", CrawlConfig.user_agent))
    cfg.setdefault("max_image_pixels", _setting("GALLERY_MAX_IMAGE_PIXELS", CrawlConfig.max_image_pixels))
    if log_path is not None:
        cfg["log_file"] = str(log_path)
    return CrawlConfig.from_dict(cfg).to_dict()


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _pump(stream, sink: queue.Queue, tag: str) -> None:
    try:
        for line in iter(stream.readline, ""):
            sink.put((tag, line))
    except (OSError, ValueError):
        pass
    finally:
        sink.put((tag, None))


def run_crawl(
    config: dict[str, Any],
    *,
    on_event: Callable[[dict[str, Any]], None],
    should_stop: Callable[[], bool],
    log_path: Path | None = None,
    kill_grace: float = 10.0,
    timeout: float | None = None,
    command: Sequence[str] | None = None,
) -> CrawlOutcome:
    """Run one crawl to its end; never raises for what happens in the child, never hangs.

    ``log_path``: the crawl's log file (default ``<work_dir>/crawl.log``); the child's stderr (tracebacks)
    is appended to it too. After ``should_stop()`` turns true the child gets SIGINT, and SIGKILL if it is
    still running ``kill_grace`` seconds later. ``timeout`` (default: the config's ``max_seconds`` plus a
    minute) bounds the whole run the same way. ``command`` replaces the child's command line (tests).
    Raises ConfigError before starting anything when the config is invalid.
    """
    cfg = prepare_config(config, log_path=log_path)
    Path(cfg["work_dir"]).mkdir(parents=True, exist_ok=True)
    log_file = Path(cfg["log_file"])
    log_file.parent.mkdir(parents=True, exist_ok=True)
    limit = timeout if timeout is not None else cfg["max_seconds"] + 60.0
    argv = list(command) if command is not None else [sys.executable, "-m", "scraping.crawler.run", "-"]

    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=str(PROJECT_ROOT),
            env=_child_env(),
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            # Its own session: a Ctrl-C meant for the worker does not reach it; we stop it ourselves.
            start_new_session=True,
        )
    except OSError as exc:
        return CrawlOutcome(None, "crashed", error=f"could not start the crawler: {exc}")

    try:
        proc.stdin.write(json.dumps(cfg))
        proc.stdin.close()
    except (BrokenPipeError, OSError):
        pass  # the child died at once; its exit status tells

    lines: queue.Queue = queue.Queue()
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, lines, "out"), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, lines, "err"), daemon=True),
    ]
    for t in readers:
        t.start()

    stderr_tail: deque[str] = deque(maxlen=40)
    done: dict[str, Any] | None = None
    events = 0
    open_streams = 2
    started = time.monotonic()
    stop_sent_at: float | None = None
    killed = False
    stop_cause: str | None = None
    callback_error: str | None = None
    last_poll = 0.0

    def send_stop(cause: str) -> None:
        nonlocal stop_sent_at, stop_cause
        if stop_sent_at is None:
            stop_cause = cause
            stop_sent_at = time.monotonic()
            _signal(proc, signal.SIGINT)

    with open(log_file, "a", encoding="utf-8") as log:
        while open_streams or proc.poll() is None:
            try:
                tag, line = lines.get(timeout=POLL_SECONDS)
            except queue.Empty:
                tag, line = None, None
            if tag is not None and line is None:
                open_streams -= 1
            elif tag == "err":
                stderr_tail.append(line.rstrip("\n"))
                log.write(line)
                log.flush()
            elif tag == "out":
                event = _parse_event(line)
                if event is None:
                    continue
                events += 1
                if event.get("event") == "done":
                    done = event
                try:
                    on_event(event)
                except Exception as exc:  # noqa: BLE001 - a broken callback stops the crawl, not the worker
                    callback_error = f"on_event failed: {type(exc).__name__}: {exc}"
                    send_stop("callback")

            now = time.monotonic()
            if stop_sent_at is None and now - last_poll >= POLL_SECONDS:
                last_poll = now
                try:
                    if should_stop():
                        send_stop("cancel")
                except Exception as exc:  # noqa: BLE001
                    callback_error = f"should_stop failed: {type(exc).__name__}: {exc}"
                    send_stop("callback")
                if now - started > limit:
                    send_stop("timeout")
            if stop_sent_at is not None and not killed and time.monotonic() - stop_sent_at > kill_grace:
                if proc.poll() is None:
                    _signal(proc, signal.SIGKILL)
                    killed = True
            if not open_streams and proc.poll() is None:
                # Streams closed but the process lingers: give it the grace period, then kill.
                try:
                    proc.wait(timeout=kill_grace)
                except subprocess.TimeoutExpired:
                    _signal(proc, signal.SIGKILL)
                    killed = True
                    proc.wait()
    returncode = proc.wait()
    for t in readers:
        t.join(timeout=1)

    tail = "\n".join(stderr_tail)
    if done is not None:
        outcome = CrawlOutcome(
            returncode=returncode,
            reason=str(done.get("reason") or "error"),
            stats=done.get("stats") or {},
            limits_hit=list(done.get("limits_hit") or []),
            error=done.get("error"),
            events=events,
            stderr_tail=tail,
        )
        if stop_cause == "timeout" and outcome.reason == "cancelled":
            outcome.reason = "timeout"
            outcome.error = outcome.error or f"the crawl ran past {limit:.0f}s and was stopped"
    elif killed:
        reason = "timeout" if stop_cause == "timeout" else "killed"
        outcome = CrawlOutcome(
            returncode,
            reason,
            error=f"the crawler did not stop within {kill_grace:.0f}s and was killed",
            events=events,
            stderr_tail=tail,
        )
    else:
        detail = f": {stderr_tail[-1]}" if stderr_tail else ""
        outcome = CrawlOutcome(
            returncode,
            "crashed",
            error=f"the crawler exited with status {returncode} without finishing{detail}",
            events=events,
            stderr_tail=tail,
        )
    if callback_error:
        outcome.error = callback_error
    return outcome


def _parse_event(line: str) -> dict[str, Any] | None:
    line = line.strip()
    if not line:
        return None
    try:
        event = json.loads(line)
    except ValueError:
        event = None
    if not isinstance(event, dict) or "event" not in event:
        # Not ours (a library printing): keep it visible as a log event rather than losing it.
        return {"event": "log", "level": "WARNING", "logger": "stdout", "message": line[:4000]}
    return event


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except (ProcessLookupError, OSError):
        pass
