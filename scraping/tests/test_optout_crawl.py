"""Real crawls of the opt-out test site on 127.0.0.1: every signal, on a page and on an image, makes its image
an "opted_out" skip that is never saved, unless the crawl's policy is "ignore" (then the signals travel with
the downloaded image). Unit tests of the parsers are in test_optout.py."""

from __future__ import annotations

import pytest

from scraping.tests import optout_site
from scraping.tests.optout_site import EXPECTED, OptOutSite

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def optout_site_server():
    site = OptOutSite().start()
    yield site
    site.stop()


def _crawl(crawl, site, policy):
    return crawl({"start_url": site.url("/"), "depth": 1, "allow_private": True, "optout_policy": policy})


@pytest.fixture(scope="module")
def respected(crawl, optout_site_server):
    return _crawl(crawl, optout_site_server, "respect")


@pytest.fixture(scope="module")
def ignored(crawl, optout_site_server):
    return _crawl(crawl, optout_site_server, "ignore")


def test_each_signal_on_a_page_or_an_image_opts_its_image_out(respected, optout_site_server):
    site = optout_site_server
    assert respected.outcome.ok, respected.outcome
    outcomes = respected.outcomes()
    skipped = respected.by_url("image_skipped")
    for path, expected in EXPECTED.items():
        url = site.url(path)
        if expected is None:
            assert outcomes[url] == "downloaded", path
            continue
        assert outcomes[url] == "skipped:opted_out", path
        signal, where = expected
        found = {(s["signal"], s["where"]) for s in skipped[url]["optout"]}
        assert (signal, where) in found, (path, skipped[url]["optout"])
    assert respected.outcome.stats["images_opted_out"] == sum(1 for v in EXPECTED.values() if v)


def test_nothing_opted_out_is_saved_and_page_opt_outs_are_not_even_fetched(respected, optout_site_server):
    saved = {e["url"] for e in respected.of("image_downloaded")}
    assert len(list((respected.work_dir / "images").iterdir())) == len(saved)
    requested = optout_site_server.requested()
    assert "/.well-known/tdmrep.json" in requested and "/robots.txt" in requested
    for path, expected in EXPECTED.items():
        if expected and (expected[1] == "page" or expected[0] == "tdmrep.json"):
            assert path not in requested, path  # reserved before the request: never downloaded
    assert "/i/mixed/ok.png" in requested and "/i/xr-noai.png" in requested


def test_signals_name_where_they_were_found(respected, optout_site_server):
    site = optout_site_server
    skipped = respected.by_url("image_skipped")
    tdmrep = skipped[site.url("/i/on-tdmrep-page.png")]["optout"][0]
    assert tdmrep == {"signal": "tdmrep.json", "where": "page", "url": site.url("/p/tdmrep/page.html"),
                      "value": f"location /p/tdmrep/*, policy {optout_site.POLICY_URL}"}
    header = skipped[site.url("/i/xr-scoped.png")]["optout"]
    assert header == [{"signal": "x-robots-tag", "value": "noimageai", "where": "image",
                       "url": site.url("/i/xr-scoped.png")}]
    policy = skipped[site.url("/i/tdm-pol.png")]["optout"]
    assert policy == [{"signal": "tdm-policy", "value": optout_site.POLICY_URL, "where": "image",
                       "url": site.url("/i/tdm-pol.png")}]


def test_the_ignore_policy_downloads_everything_and_keeps_the_signals(ignored, optout_site_server):
    site = optout_site_server
    assert ignored.outcome.ok
    downloaded = ignored.by_url("image_downloaded")
    assert set(downloaded) == {site.url(p) for p in EXPECTED}
    for path, expected in EXPECTED.items():
        signals = downloaded[site.url(path)]["optout"]
        if expected is None:
            assert signals == [], path
        else:
            assert expected in {(s["signal"], s["where"]) for s in signals}, path
        assert downloaded[site.url(path)]["fetched_at"].endswith("+00:00")


def test_licence_links_and_creative_commons_markup_travel_with_the_image(ignored, optout_site_server):
    site = optout_site_server
    hints = ignored.by_url("image_downloaded")[site.url("/i/licensed.png")]["licence"]
    kinds = {(h["kind"], h["value"]) for h in hints}
    assert ("link-rel-license", optout_site.CC_BY_SA) in kinds
    assert ("a-rel-license", optout_site.CC_BY_SA) in kinds
    assert ("cc-markup:cc:attributionName", "Ada Example") in kinds
    assert all(h["page_url"] == site.url("/p/licensed.html") for h in hints)
    assert ignored.by_url("image_downloaded")[site.url("/i/clean.png")]["licence"] == []
