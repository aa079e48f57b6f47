"""The crawl's pure-Python parts, in-process: config, host guard, srcset, image checks, event stream.

Scrapy and Twisted must never be imported into this (test or web) process; they live in the subprocess.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

import pytest
from PIL import Image

from scraping.crawler.config import ConfigError, CrawlConfig
from scraping.crawler.events import Emitter, EventLogHandler
from scraping.crawler.guard import HostGuard
from scraping.crawler.images import ImageRejected, best_srcset_candidate, inspect_image, parse_srcset
from scraping.urlsafety import UnresolvableHost, UnsafeURL

# -- config -----------------------------------------------------------------------------------------


def test_config_fills_defaults_from_the_start_url(tmp_path):
    cfg = CrawlConfig.from_dict({"start_url": "https://Example.com/gallery/", "work_dir": str(tmp_path)})
    assert cfg.allowed_domains == ["example.com"]
    assert cfg.log_file == str(tmp_path / "crawl.log")
    assert cfg.obey_robots is True and cfg.allow_private is False and cfg.host_overrides is None
    assert CrawlConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"start_url": "file:///etc/passwd"}, "scheme 'file'"),
        ({"start_url": ""}, "start_url is required"),
        ({"work_dir": ""}, "work_dir is required"),
        ({"max_pages": 0}, "max_pages"),
        ({"max_images": "10"}, "max_images"),
        ({"depth": -1}, "depth"),
        ({"delay": float("nan")}, "delay"),
        ({"obey_robots": "yes"}, "obey_robots"),
        ({"max_response_bytes": 10}, "max_response_bytes"),
        ({"allowed_domains": "example.com"}, "allowed_domains"),
        ({"allowed_domains": ["exa mple.com"]}, "allowed_domains"),
        ({"host_overrides": {"a.test": "not-an-ip"}}, "host_overrides"),
        ({"log_level": "LOUD"}, "log_level"),
        ({"user_agent": "a\nb"}, "user_agent"),
        ({"start_urls": ["x"]}, "unknown configuration keys: start_urls"),
    ],
)
def test_config_rejects_bad_values(tmp_path, change, needle):
    raw = {"start_url": "http://example.com/", "work_dir": str(tmp_path), **change}
    with pytest.raises(ConfigError, match=needle):
        CrawlConfig.from_dict(raw)


# -- host guard -------------------------------------------------------------------------------------


def test_guard_with_overrides_never_asks_real_dns():
    asked = []
    guard = HostGuard(allow_private=True, host_overrides={"site.test": "127.0.0.1"}, system_resolver=asked.append)
    guard.check_url("http://site.test:8000/")
    guard.check_url("http://127.0.0.1/")
    with pytest.raises(UnresolvableHost, match="not in the test host overrides"):
        guard.check_url("http://example.com/")
    assert asked == [] and guard.stats()["dns_real_lookups"] == 0
    assert not guard.needs_network("example.com")


def test_guard_without_overrides_uses_the_system_resolver_for_names_only():
    asked = []

    def system(host):
        asked.append(host)
        return ["93.184.216.34"]

    guard = HostGuard(allow_private=False, system_resolver=system)
    guard.check_url("http://example.com/")
    with pytest.raises(UnsafeURL):
        guard.check_url("http://127.0.0.1/")
    assert asked == ["example.com"] and guard.real_lookups == 1
    assert guard.needs_network("example.com") and not guard.needs_network("0x7f.1")


def test_override_mapped_private_names_stay_refused_with_allow_private():
    guard = HostGuard(
        allow_private=True,
        host_overrides={"private.test": "10.0.0.1", "meta.test": "169.254.169.254", "mapped.test": "::ffff:10.0.0.1"},
    )
    for host, addr in (("private.test", "10.0.0.1"), ("meta.test", "169.254.169.254"), ("mapped.test", "10.0.0.1")):
        with pytest.raises(UnsafeURL, match=addr.replace(".", r"\.")):
            guard.check_url(f"http://{host}/")


def test_guard_answers_in_sequence_to_simulate_rebinding():
    guard = HostGuard(allow_private=True, host_overrides={"rebind.test": ["127.0.0.1", "10.0.0.1"]})
    guard.check_url("http://rebind.test/")  # the request-time check sees loopback
    with pytest.raises(UnsafeURL, match="10.0.0.1"):
        guard.resolve_for_connect("rebind.test")  # the connection sees the new answer
    assert "rebind.test" in guard.refused_at_connect
    assert guard.stats()["connect_hosts"] == ["rebind.test"]


def test_guard_refuses_an_answer_with_any_bad_address():
    guard = HostGuard(allow_private=True, host_overrides={"multi.test": "127.0.0.1, 10.0.0.1"})
    with pytest.raises(UnsafeURL, match="10.0.0.1"):
        guard.resolve_for_connect("multi.test")


def test_guard_is_shared_not_copied_by_scrapy_settings():
    import copy

    guard = HostGuard()
    assert copy.deepcopy({"IMAGINEER_GUARD": guard})["IMAGINEER_GUARD"] is guard


# -- images -----------------------------------------------------------------------------------------


def test_srcset_parsing_follows_the_html_rules():
    assert parse_srcset("a.jpg 1x, b.jpg 2x") == [("a.jpg", "1x"), ("b.jpg", "2x")]
    assert parse_srcset("https://cdn.test/w_300,h_200/x.jpg 300w,https://cdn.test/w_900,h_600/x.jpg 900w") == [
        ("https://cdn.test/w_300,h_200/x.jpg", "300w"),
        ("https://cdn.test/w_900,h_600/x.jpg", "900w"),
    ]
    assert best_srcset_candidate("s.jpg 320w, l.jpg 1024w, m.jpg 640w") == "l.jpg"
    assert best_srcset_candidate("one.jpg, two.jpg 2x") == "two.jpg"
    assert best_srcset_candidate("only.jpg") == "only.jpg"
    assert best_srcset_candidate(" , ") is None


def _encode(fmt: str, size=(20, 10)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_inspect_image_accepts_the_allowed_formats(fmt):
    assert inspect_image(_encode(fmt), max_pixels=10_000) == (fmt, 20, 10)


def test_inspect_image_rejects_junk_truncation_other_formats_and_too_many_pixels():
    with pytest.raises(ImageRejected) as junk:
        inspect_image(b"\x00garbage" * 50, max_pixels=10_000, content_type="image/jpeg")
    assert junk.value.bucket == "invalid_image" and "image/jpeg" in str(junk.value)
    with pytest.raises(ImageRejected) as truncated:
        inspect_image(_encode("PNG", (200, 200))[:-200], max_pixels=1_000_000)
    assert truncated.value.bucket == "invalid_image"
    with pytest.raises(ImageRejected) as ico:
        inspect_image(_encode("ICO", (16, 16)), max_pixels=10_000)
    assert ico.value.bucket == "invalid_image"
    with pytest.raises(ImageRejected) as big:
        inspect_image(_encode("PNG", (100, 100)), max_pixels=5_000)
    assert big.value.bucket == "too_many_pixels"


# -- events -----------------------------------------------------------------------------------------


def test_emitter_writes_one_json_object_per_line_and_survives_a_closed_pipe():
    stream = io.StringIO()
    emitter = Emitter(stream)
    emitter.emit("page", url="http://x.test/é", status=200)
    record = json.loads(stream.getvalue())
    assert record["event"] == "page" and record["url"] == "http://x.test/é" and "t" in record

    broken = []
    stream.close()
    emitter.on_broken = lambda: broken.append(True)
    emitter.emit("page", url="y")  # must not raise
    assert emitter.broken and broken == [True]


def test_log_handler_forwards_warnings_and_our_own_info():
    stream = io.StringIO()
    handler = EventLogHandler(Emitter(stream))
    for name, level in (("scrapy.core", logging.INFO), ("scrapy.core", logging.WARNING), ("scraping.x", logging.INFO)):
        handler.handle(logging.LogRecord(name, level, __file__, 1, "msg %s", ("a",), None))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(r["logger"], r["level"]) for r in lines] == [("scrapy.core", "WARNING"), ("scraping.x", "INFO")]
    assert lines[0]["message"] == "msg a"


def test_the_parent_side_never_imports_scrapy_or_twisted():
    code = (
        "import sys, scraping.crawl_runner, scraping.urlsafety, scraping.crawler.config, "
        "scraping.crawler.guard, scraping.crawler.events, scraping.crawler.images; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('scrapy', 'twisted')); "
        "assert not bad, bad"
    )
    from scraping.crawl_runner import PROJECT_ROOT

    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJECT_ROOT)


def test_the_crawl_settings_use_scrapy_limits_and_switch_off_risky_features(tmp_path):
    from scraping.crawler.run import build_settings

    cfg = CrawlConfig.from_dict(
        {"start_url": "http://example.com/", "work_dir": str(tmp_path), "depth": 3, "max_response_bytes": 4096}
    )
    guard = HostGuard()
    s = build_settings(cfg, guard)
    assert s["IMAGINEER_GUARD"] is guard
    assert s["DOWNLOAD_HANDLERS"] == {"file": None, "data": None, "s3": None, "ftp": None}
    assert s["TELNETCONSOLE_ENABLED"] is False and s["REMOTE_CONTROL_ENABLED"] is False
    assert s["EXTENSIONS"]["scrapy.extensions.remote_control.RemoteControl"] is None
    assert s["HTTPPROXY_ENABLED"] is False
    assert s["DOWNLOADER_MIDDLEWARES"]["scraping.crawler.safety.SafetyMiddleware"] == 1
    assert min(v for v in s["DOWNLOADER_MIDDLEWARES"].values() if v is not None) == 1
    assert s["TWISTED_DNS_RESOLVER"] == "scraping.crawler.safety.GuardedResolver"
    assert (s["DEPTH_LIMIT"], s["DOWNLOAD_MAXSIZE"], s["ROBOTSTXT_OBEY"]) == (4, 4096, True)
    assert s["DOWNLOAD_TIMEOUT"] == cfg.download_timeout and s["DOWNLOAD_DELAY"] == cfg.delay


RESOLVER_SCRIPT = """
import json
from twisted.internet import reactor
from scraping.crawler.guard import HostGuard
from scraping.crawler.safety import GuardedResolver
from scraping.urlsafety import UnresolvableHost

TABLE = {"good.example": ["127.0.0.1"], "bad.example": ["10.0.0.1"], "mixed.example": ["127.0.0.1", "10.0.0.1"]}

def system_resolver(host):  # stands in for getaddrinfo: the threaded path, without the network
    if host not in TABLE:
        raise UnresolvableHost(host)
    return TABLE[host]

HOSTS = ["good.example", "bad.example", "mixed.example", "nowhere.example", "127.0.0.1", "10.0.0.1", "[::1]"]
guard = HostGuard(allow_private=True, system_resolver=system_resolver)
resolver = GuardedResolver(reactor, guard)
results = {}

class Receiver:
    def __init__(self, name):
        self.name, self.addresses = name, []
    def resolutionBegan(self, resolution):
        pass
    def addressResolved(self, address):
        self.addresses.append([type(address).__name__, address.host, address.port])
    def resolutionComplete(self):
        results[self.name] = self.addresses
        if len(results) == len(HOSTS):
            reactor.stop()

def start():
    for host in HOSTS:
        resolver.resolveHostName(Receiver(host), host.strip("[]"), 8080)

reactor.callWhenRunning(start)
reactor.callLater(20, reactor.stop)
reactor.run()
print(json.dumps({"results": results, "stats": guard.stats()}))
"""


def test_the_connection_time_resolver_hands_over_only_allowed_addresses():
    """GuardedResolver in a Twisted reactor of its own (a subprocess: no Twisted in this process)."""
    from scraping.crawl_runner import PROJECT_ROOT

    proc = subprocess.run(
        [sys.executable, "-c", RESOLVER_SCRIPT], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["results"] == {
        "good.example": [["IPv4Address", "127.0.0.1", 8080]],
        "bad.example": [],
        "mixed.example": [],  # one bad address refuses the whole answer
        "nowhere.example": [],
        "127.0.0.1": [["IPv4Address", "127.0.0.1", 8080]],
        "10.0.0.1": [],
        "[::1]": [["IPv6Address", "::1", 8080]],
    }
    stats = out["stats"]
    assert stats["dns_real_lookups"] == 4  # names only; literals never reach the resolver function
    assert set(stats["refused_at_connect"]) == {"bad.example", "mixed.example", "10.0.0.1"}
