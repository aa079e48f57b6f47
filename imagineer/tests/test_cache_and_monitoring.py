"""Django's cache lives in Redis (shared by every process), falls back when Redis is down; Sentry when set."""

import gzip
import http.server
import logging
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

from django.conf import settings

from imagineer.cache import FallbackRedisCache

ROOT = Path(__file__).resolve().parents[2]


def _cache(location: str) -> FallbackRedisCache:
    # A new instance is what another web process (or machine) would have.
    return FallbackRedisCache(location, {"KEY_PREFIX": settings.REDIS_PREFIX + "cache-test-" + uuid.uuid4().hex})


def test_the_configured_cache_is_redis_at_redis_url():
    config = settings.CACHES["default"]
    assert config["BACKEND"] == "imagineer.cache.FallbackRedisCache"
    assert config["LOCATION"] == settings.REDIS_URL
    assert config["KEY_PREFIX"].startswith(settings.REDIS_PREFIX)


def test_two_processes_share_what_is_cached():
    one = _cache(settings.REDIS_URL)
    two = FallbackRedisCache(settings.REDIS_URL, {"KEY_PREFIX": one.key_prefix})
    one.set("attempts", 3, timeout=30)
    assert two.get("attempts") == 3
    assert two.incr("attempts") == 4 and one.get("attempts") == 4
    assert one.add("attempts", 1) is False  # add on a shared key sees the other process's value
    one.clear()


def test_with_redis_down_it_falls_back_to_memory_and_says_so(caplog):
    down = _cache("redis://127.0.0.1:1/0")  # nothing listens on port 1
    with caplog.at_level(logging.WARNING, logger="imagineer.cache"):
        down.set("k", "v", timeout=30)
        assert down.get("k") == "v"
        assert down.add("n", 1) is True and down.incr("n") == 2
        down.delete("k")
        assert down.get("k") is None
    warnings = [r for r in caplog.records if "Redis cache unreachable" in r.getMessage()]
    assert len(warnings) == 1  # said once, not on every call


class _Collector(http.server.BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "br":
            import brotli

            body = brotli.decompress(body)
        type(self).bodies.append(body)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_sentry_dsn_sends_an_unhandled_view_error_to_the_server(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dsn = f"http://publickey@127.0.0.1:{server.server_address[1]}/42"
        # A view that raises, served through Django's real handler (its own URLconf, a module made here).
        code = (
            "import sys, types, django; django.setup()\n"
            "import sentry_sdk\n"
            "from django.test import Client, override_settings\n"
            "from django.urls import path\n"
            "names = set(sentry_sdk.get_client().integrations)\n"
            "assert {'django', 'rq'} <= names, names\n"
            "def boom(request):\n"
            "    raise RuntimeError('boom-from-a-view')\n"
            "urls = types.ModuleType('boom_urls'); urls.urlpatterns = [path('gallery/boom/', boom)]\n"
            "sys.modules['boom_urls'] = urls\n"
            "with override_settings(ROOT_URLCONF='boom_urls'):\n"
            "    assert Client(raise_request_exception=False).get('/gallery/boom/').status_code == 500\n"
            "sentry_sdk.flush(10)\n"
        )
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "imagineer.settings.test", "SENTRY_DSN": dsn,
               "IMAGINEER_DATA_DIR": str(tmp_path)}
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
    finally:
        server.shutdown()
    events = b"".join(_Collector.bodies)
    assert b"boom-from-a-view" in events and b"RuntimeError" in events
    assert b"/gallery/boom/" in events  # the request it came from


def test_without_sentry_dsn_nothing_is_initialised(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRY_")}
    env.update(DJANGO_SETTINGS_MODULE="imagineer.settings.test", IMAGINEER_DATA_DIR=str(tmp_path))
    code = "import django; django.setup(); import sentry_sdk; print(sentry_sdk.get_client().is_active())"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.strip() == "False", result.stderr
