"""Real crawls (scraping.crawl_runner -> python -m scraping.crawler.run) against the test site on 127.0.0.1.

Only 127.0.0.1 is ever contacted: the other host names exist only in the crawl's host overrides, and the
private ones are refused before any connection (the guard's stats prove which hosts reached the resolver).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from scraping.tests import site as site_def

pytestmark = pytest.mark.slow

MAIN_DEPTH = 2


def assert_one_outcome_per_discovered_image(result):
    discovered = [e["url"] for e in result.of("image_discovered")]
    assert len(discovered) == len(set(discovered)), "an image URL was discovered twice"
    outcomes = Counter(e["url"] for e in result.of("image_downloaded", "image_failed", "image_skipped"))
    assert set(outcomes) == set(discovered)
    assert all(n == 1 for n in outcomes.values()), outcomes
    first_seen = {}
    for i, e in enumerate(result.events):
        if e["event"] == "image_discovered":
            first_seen[e["url"]] = i
        elif e["event"] in ("image_downloaded", "image_failed", "image_skipped"):
            assert first_seen.get(e["url"], 10**9) < i, f"outcome before discovery: {e['url']}"


@pytest.fixture(scope="module")
def main_crawl(crawl, test_site):
    test_site.clear_log()
    result = crawl(
        {
            "start_url": test_site.url("/"),
            "depth": MAIN_DEPTH,
            "min_bytes": site_def.MIN_BYTES,
            "max_response_bytes": site_def.MAX_RESPONSE_BYTES,
            "download_timeout": site_def.DOWNLOAD_TIMEOUT,
            "host_overrides": site_def.HOST_OVERRIDES,
            "allow_private": True,
        }
    )
    result.extra["requested"] = test_site.requested_paths()
    result.extra["expected"] = test_site.expected(depth=MAIN_DEPTH)
    return result


def test_the_crawl_finishes_with_a_complete_event_stream(main_crawl):
    outcome = main_crawl.outcome
    assert outcome.returncode == 0 and outcome.reason == "finished" and outcome.ok, outcome
    assert main_crawl.events[0]["event"] == "started"
    assert main_crawl.events[-1]["event"] == "done"
    assert outcome.limits_hit == ["depth"]
    log = Path(main_crawl.work_dir, "crawl.log").read_text()
    assert "Enabled extensions" in log and "Spider closed (finished)" in log
    assert "RemoteControl" not in log and "TelnetConsole" not in log  # no control servers in the crawl


def test_it_crawls_exactly_the_pages_within_depth(main_crawl, test_site):
    expected = main_crawl.extra["expected"]
    pages = main_crawl.of("page")
    assert sorted(e["url"] for e in pages) == sorted(test_site.url(p) for p in expected.pages)
    failed = {e["url"]: e["bucket"] for e in main_crawl.of("page_failed")}
    assert failed == {test_site.url(p): bucket for p, bucket in expected.page_failures.items()}
    assert {e["url"]: e["depth"] for e in pages}[test_site.url("/gallery/deep.html")] == 2
    stats = main_crawl.outcome.stats
    assert stats["pages"] == len(expected.pages) == 7
    assert stats["pages_failed"] == len(expected.page_failures) == 3
    assert "/elsewhere.html" not in main_crawl.extra["requested"]


def test_every_image_gets_exactly_the_expected_outcome(main_crawl, test_site):
    expected = main_crawl.extra["expected"]
    assert_one_outcome_per_discovered_image(main_crawl)
    got = main_crawl.outcomes()
    # Which of two identical files counts as the duplicate depends on download order.
    pair = {test_site.url("/img/photo.jpg"), test_site.url("/img/photo-copy.jpg")}
    assert sorted(got[u] for u in pair) == ["downloaded", "skipped:duplicate"]
    assert {u: o for u, o in got.items() if u not in pair} == {
        u: o for u, o in expected.images.items() if u not in pair
    }
    counts = expected.image_counts()
    stats = main_crawl.outcome.stats
    assert stats["images_discovered"] == len(expected.images) == 23
    assert stats["images_downloaded"] == counts["downloaded"] == 9
    assert stats["skipped"] == {"too_small": 1, "duplicate": 1}
    assert stats["failures"] == {
        "refused_unsafe": 6,
        "dns": 1,
        "invalid_image": 1,
        "http_404": 1,
        "robots": 1,
        "too_large": 1,
        "timeout": 1,
    }
    assert stats["failures"] == {k.split(":")[1]: v for k, v in counts.items() if k.startswith("failed:")}


def test_discovery_keeps_alt_title_and_source(main_crawl, test_site):
    found = main_crawl.by_url("image_discovered")
    photo = found[test_site.url("/img/photo.jpg")]
    assert (photo["alt"], photo["title"], photo["source"]) == ("A photo", "Photo title", "img")
    assert photo["page_url"] == test_site.url("/")
    assert found[test_site.url("/img/s-large.jpg")]["source"] == "srcset"
    assert test_site.url("/img/s-small.jpg") not in found  # srcset: only the best candidate
    linked = found[test_site.url("/img/linked.png")]
    assert (linked["source"], linked["title"]) == ("link", "Linked image")
    assert not [u for u in found if u.startswith(("data:", "file:"))]


def test_saved_files_are_the_original_bytes(main_crawl, test_site):
    downloaded = main_crawl.of("image_downloaded")
    assert downloaded
    for e in downloaded:
        data = Path(e["path"]).read_bytes()
        served = test_site.bodies[e["final_url"].split(str(test_site.port), 1)[1]]
        assert data == served
        assert hashlib.sha256(data).hexdigest() == e["sha256"] and len(data) == e["bytes"]
        assert Path(e["path"]).parent == main_crawl.work_dir / "images"
    formats = {e["format"] for e in downloaded}
    assert formats == {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"}
    files = sorted(p.name for p in (main_crawl.work_dir / "images").iterdir())
    assert len(files) == len(downloaded) and not [f for f in files if f.endswith(".part")]


def test_robots_txt_is_obeyed(main_crawl):
    requested = main_crawl.extra["requested"]
    assert "/robots.txt" in requested
    assert not [p for p in requested if p.startswith("/private/")]
    assert "/img/secret.png" not in requested  # only linked from the disallowed page


def test_the_link_trap_ends_at_the_depth_limit(main_crawl, test_site):
    trap = sorted(e["url"] for e in main_crawl.of("page") if "/trap/" in e["url"])
    assert trap == [test_site.url("/trap/1"), test_site.url("/trap/2")]
    assert "/trap/3" not in main_crawl.extra["requested"]


def test_redirect_chains_are_followed_hop_by_hop(main_crawl, test_site):
    chained = main_crawl.by_url("image_downloaded")[test_site.url("/img/chain.jpg")]
    assert chained["final_url"] == test_site.url("/img/final.png")
    assert Path(chained["path"]).read_bytes() == test_site.bodies["/img/final.png"]
    requested = main_crawl.extra["requested"]
    assert requested.index("/img/chain.jpg") < requested.index("/r/2") < requested.index("/img/final.png")
    moved = [e for e in main_crawl.of("page") if e["requested_url"] == test_site.url("/moved")]
    assert [e["url"] for e in moved] == [test_site.url("/gallery/c.html")]


def test_errors_are_reported_with_buckets(main_crawl, test_site):
    failed = main_crawl.by_url("image_failed")
    missing = failed[test_site.url("/img/missing.jpg")]
    assert (missing["bucket"], missing["status"]) == ("http_404", 404)
    broken = failed[test_site.url("/img/broken.jpg")]
    assert broken["bucket"] == "invalid_image" and "image/jpeg" in broken["reason"]
    assert failed[test_site.url("/img/huge.png")]["bucket"] == "too_large"
    assert failed[test_site.url("/img/slow.jpg")]["bucket"] == "timeout"
    assert failed["http://nowhere.test/img/x.jpg"]["bucket"] == "dns"
    small = main_crawl.by_url("image_skipped")[test_site.url("/img/small.png")]
    assert small["reason"] == "too_small" and small["bytes"] < small["min_bytes"] == site_def.MIN_BYTES
    page_404 = main_crawl.by_url("page_failed")[test_site.url("/gallery/missing.html")]
    assert (page_404["bucket"], page_404["status"]) == ("http_404", 404)


def test_redirects_and_links_to_private_addresses_are_refused_before_connecting(main_crawl, test_site):
    failed = main_crawl.by_url("image_failed")
    cases = {
        "/img/to-private": "private address 10.0.0.1",
        "/img/to-metadata": "link-local address 169.254.169.254",
        "/img/to-mapped": "private address ::ffff:10.0.0.1",
        "http://multi.test:{port}/img/photo.jpg": "private address 10.0.0.1",
        "http://0x0a000001/img/x.jpg": "private address 10.0.0.1",
        "http://169.254.169.254/latest/meta-data/": "link-local address 169.254.169.254",
    }
    for ref, needle in cases.items():
        event = failed[test_site.url(ref)]
        assert event["bucket"] == "refused_unsafe", event
        assert needle in event["reason"], event
    guard = main_crawl.outcome.stats["guard"]
    # The connection layer was only ever asked for the test site, and no real DNS query was made.
    assert guard == {"dns_real_lookups": 0, "connect_hosts": ["127.0.0.1"], "refused_at_connect": {}}
    # The redirecting hop itself was fetched from the test site; the private hop never was.
    assert "/img/to-private" in main_crawl.extra["requested"]


def test_max_images_ends_the_crawl(crawl, test_site):
    result = crawl(
        {
            "start_url": test_site.url("/"),
            "depth": MAIN_DEPTH,
            "max_images": 2,
            "concurrency": 2,
            "host_overrides": site_def.HOST_OVERRIDES,
        }
    )
    assert result.outcome.reason == "max_images" and result.outcome.returncode == 0
    assert "max_images" in result.outcome.limits_hit
    assert len(result.of("image_downloaded")) == 2
    assert len(list((result.work_dir / "images").iterdir())) == 2
    assert_one_outcome_per_discovered_image(result)
    assert result.outcome.stats["images_downloaded"] == 2


def test_max_pages_bounds_a_link_trap_at_any_depth(crawl, test_site):
    result = crawl({"start_url": test_site.url("/trap/1"), "depth": 1000, "max_pages": 5})
    assert result.outcome.reason == "finished"
    assert [e["url"] for e in result.of("page")] == [test_site.url(f"/trap/{n}") for n in range(1, 6)]
    assert result.outcome.limits_hit == ["max_pages"]
    assert test_site.expected(start="/trap/1", depth=1000, max_pages=5).pages == [f"/trap/{n}" for n in range(1, 6)]


def test_cancel_stops_within_seconds_and_keeps_saved_files(crawl, test_site):
    result = crawl(
        {"start_url": test_site.url("/"), "depth": MAIN_DEPTH, "delay": 0.3, "cancel_grace": 1.0},
        should_stop=lambda events: any(e["event"] == "image_downloaded" for e in events),
    )
    assert result.outcome.reason == "cancelled" and result.outcome.cancelled, result.outcome
    assert result.stop_asked_at is not None
    assert result.finished_at - result.stop_asked_at < 5
    saved = result.of("image_downloaded")
    assert saved
    for e in saved:
        assert Path(e["path"]).is_file()
    assert_one_outcome_per_discovered_image(result)
    assert "cancelled" in {e.get("reason") for e in result.of("image_skipped")}  # the rest never ran
    assert result.events[-1]["event"] == "done"


def test_without_allow_private_even_loopback_is_refused(fresh_site, tmp_path):
    """The child on its own (config file argument), with no Django and no overrides."""
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "start_url": fresh_site.url("/"),
                "work_dir": str(tmp_path / "work"),
                "delay": 0,
                "host_overrides": {},  # no real DNS, whatever happens
            }
        )
    )
    from scraping.crawl_runner import PROJECT_ROOT

    proc = subprocess.run(
        [sys.executable, "-m", "scraping.crawler.run", str(config)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=60,
    )
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0, proc.stderr
    failed = [e for e in events if e["event"] == "page_failed"]
    assert len(failed) == 1 and failed[0]["bucket"] == "refused_unsafe"
    assert "loopback address 127.0.0.1" in failed[0]["reason"]
    done = events[-1]
    assert done["event"] == "done" and done["stats"]["guard"]["connect_hosts"] == []
    assert fresh_site.requested_paths() == []  # not even robots.txt


def test_dns_rebinding_between_check_and_connect_is_refused_at_connect(crawl, fresh_site):
    result = crawl(
        {
            "start_url": f"http://rebind.test:{fresh_site.port}/",
            "obey_robots": False,
            "host_overrides": {"rebind.test": ["127.0.0.1", "10.0.0.1"]},
        }
    )
    failed = result.of("page_failed")
    assert len(failed) == 1 and failed[0]["bucket"] == "refused_unsafe", result.events
    assert "connection time" in failed[0]["reason"] and "10.0.0.1" in failed[0]["reason"]
    assert result.outcome.stats["guard"]["refused_at_connect"].keys() == {"rebind.test"}
    assert fresh_site.requested_paths() == []


def test_sigterm_ends_the_crawl_with_a_done_event(test_site, tmp_path):
    from scraping.crawl_runner import PROJECT_ROOT

    config = {
        "start_url": test_site.url("/"),
        "work_dir": str(tmp_path),
        "delay": 0.5,
        "autothrottle": False,
        "allow_private": True,
        "cancel_grace": 1.0,
        "host_overrides": site_def.HOST_OVERRIDES,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "scraping.crawler.run"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=PROJECT_ROOT,
    )
    proc.stdin.write(json.dumps(config))
    proc.stdin.close()
    lines = []
    for line in proc.stdout:
        lines.append(json.loads(line))
        if lines[-1]["event"] == "page":
            break
    sent = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    lines += [json.loads(line) for line in proc.stdout]
    proc.wait(timeout=10)
    assert time.monotonic() - sent < 5
    assert proc.returncode == 0
    assert lines[-1]["event"] == "done" and lines[-1]["reason"] == "cancelled"


def test_an_invalid_config_fails_fast_with_a_done_event(tmp_path):
    from scraping.crawl_runner import PROJECT_ROOT

    proc = subprocess.run(
        [sys.executable, "-m", "scraping.crawler.run"],
        input=json.dumps({"start_url": "gopher://x/", "work_dir": str(tmp_path)}),
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=30,
    )
    assert proc.returncode == 2
    (done,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert done["event"] == "done" and done["reason"] == "error" and "scheme 'gopher'" in done["error"]
