"""Fixtures for the crawler tests: the test website on 127.0.0.1 and a helper that runs a real crawl."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from scraping.tests.site import HOST_OVERRIDES, TestSite


@pytest.fixture(scope="session")
def test_site():
    site = TestSite().start()
    yield site
    site.stop()


@pytest.fixture
def fresh_site():
    """A site of its own, for tests that assert on the exact requests it received."""
    site = TestSite().start()
    yield site
    site.stop()


@dataclass
class CrawlResult:
    outcome: Any
    events: list[dict[str, Any]]
    work_dir: Path
    elapsed: float
    stop_asked_at: float | None = None
    finished_at: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def of(self, *types: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] in types]

    def by_url(self, *types: str) -> dict[str, dict[str, Any]]:
        return {e["url"]: e for e in self.of(*types)}

    @property
    def done(self) -> dict[str, Any]:
        return self.of("done")[-1]

    def outcomes(self) -> dict[str, str]:
        """image URL -> "downloaded" / "failed:<bucket>" / "skipped:<reason>", as the site's ImageDef spells them."""
        out = {}
        for e in self.of("image_downloaded", "image_failed", "image_skipped"):
            kind = e["event"].removeprefix("image_")
            detail = e.get("bucket") if kind == "failed" else e.get("reason") if kind == "skipped" else None
            out[e["url"]] = f"{kind}:{detail}" if detail else kind
        return out


@pytest.fixture(scope="session")
def crawl(tmp_path_factory) -> Callable[..., CrawlResult]:
    """Run a crawl through scraping.crawl_runner (a real subprocess) with test-friendly defaults."""
    from django.test import override_settings

    from scraping.crawl_runner import run_crawl

    def run(
        config: dict[str, Any],
        *,
        allow_private_setting: bool = True,
        should_stop: Callable[[list[dict[str, Any]]], bool] | None = None,
        **kwargs: Any,
    ) -> CrawlResult:
        work_dir = tmp_path_factory.mktemp("crawl")
        cfg = {
            "work_dir": str(work_dir),
            "delay": 0,
            "autothrottle": False,
            "retries": 0,
            # Always a closed world: names outside the overrides fail without a real DNS query.
            "host_overrides": HOST_OVERRIDES,
            **config,
        }
        events: list[dict[str, Any]] = []
        result = CrawlResult(outcome=None, events=events, work_dir=work_dir, elapsed=0.0)

        def stop() -> bool:
            if should_stop is not None and should_stop(events):
                if result.stop_asked_at is None:
                    result.stop_asked_at = time.monotonic()
                return True
            return False

        started = time.monotonic()
        with override_settings(SCRAPE_ALLOW_PRIVATE=allow_private_setting):
            result.outcome = run_crawl(cfg, on_event=events.append, should_stop=stop, **kwargs)
        result.finished_at = time.monotonic()
        result.elapsed = result.finished_at - started
        return result

    return run


# -- scrape jobs ------------------------------------------------------------------------------------------

# What the job tests crawl with: the crawler tests' limits, no politeness delay, the closed test DNS.
JOB_OPTIONS = {
    "depth": 2,
    "min_bytes": 1000,  # site.MIN_BYTES
    "download_timeout": 2.0,  # site.DOWNLOAD_TIMEOUT
    "delay": 0.0,
    "autothrottle": False,
    "min_width": 0,
    "min_height": 0,
}


@pytest.fixture
def scrape_settings(settings, tmp_path, media_root, artifacts_root):
    """Settings for jobs that crawl the test site: loopback allowed, test DNS, private work dir and storages."""
    from scraping.tests import site as site_def

    settings.SCRAPE_ALLOW_PRIVATE = True
    settings.SCRAPE_TEST_HOST_OVERRIDES = dict(site_def.HOST_OVERRIDES)
    settings.SCRAPE_MAX_RESPONSE_BYTES = site_def.MAX_RESPONSE_BYTES
    settings.WORK_DIR = tmp_path / "work"
    return settings


@pytest.fixture
def label_hook():
    """Register a function in scraping.hooks.scraped_label_hooks for one test."""
    from scraping import hooks

    added = []

    def register(func):
        hooks.scraped_label_hooks.append(func)
        added.append(func)
        return func

    yield register
    for func in added:
        hooks.scraped_label_hooks.remove(func)


@pytest.fixture
def no_real_dns(monkeypatch):
    """In-process URL checks never ask real DNS: host names fail as unresolvable (IP literals need no lookup)."""
    from scraping import urlsafety

    def refuse(host):
        raise urlsafety.UnresolvableHost(f"host {host!r} does not resolve (no DNS in tests)")

    monkeypatch.setattr(urlsafety, "system_resolve", refuse)
