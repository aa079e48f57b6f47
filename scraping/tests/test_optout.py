"""The opt-out parsers of the crawl process (scraping/crawler/optout.py), without a crawl."""

from __future__ import annotations

from scraping.crawler import optout
from scraping.crawler.config import ConfigError, CrawlConfig

TOKEN = optout.bot_token("ImagineerBot/0.1 (+self-hosted dataset builder)")


def test_the_bot_token_is_the_product_name():
    assert TOKEN == "imagineerbot"


def test_x_robots_tag_directives_and_user_agent_scopes():
    assert optout.robots_directives("noai, noimageai", token=TOKEN) == {"noai", "noimageai"}
    assert optout.robots_directives("NoIndex", token=TOKEN) == {"noindex"}
    assert optout.robots_directives("none", token=TOKEN) == {"noindex"}
    assert optout.robots_directives("nofollow, noarchive", token=TOKEN) == set()
    assert optout.robots_directives("imagineerbot: noimageindex", token=TOKEN) == {"noimageindex"}
    assert optout.robots_directives("*: noai", token=TOKEN) == {"noai"}
    assert optout.robots_directives("otherbot: noai", token=TOKEN) == set()
    assert optout.robots_directives("otherbot: noai, noimageai", token=TOKEN) == set()
    # Header lines joined by a proxy: each agent's group runs until the next agent.
    assert optout.robots_directives("otherbot: noai, ImagineerBot: noimageindex, nofollow", token=TOKEN) == {
        "noimageindex"}
    assert optout.robots_directives("imagineerbot: noai, otherbot: noimageai", token=TOKEN) == {"noai"}
    # "name: value" directives are not user agents.
    assert optout.robots_directives("max-image-preview: none", token=TOKEN) == set()
    assert optout.robots_directives("unavailable_after: 2020-01-01, noai", token=TOKEN) == {"noai"}


def test_x_robots_signals_say_where_they_were_found():
    signals = optout.x_robots_signals(["otherbot: noai", "noimageai"], token=TOKEN, where="image", url="http://x/a.png")
    assert signals == [{"signal": "x-robots-tag", "value": "noimageai", "where": "image", "url": "http://x/a.png"}]


def test_meta_robots_for_everyone_or_for_us():
    metas = [("robots", "noai"), ("googlebot", "noindex"), ("ImagineerBot", "noimageindex"), ("viewport", "x")]
    values = [s["value"] for s in optout.meta_robots_signals(metas, token=TOKEN, url="http://x/")]
    assert values == ["noai", "noimageindex"]


def test_tdm_headers_and_meta():
    assert optout.tdm_header_signals("1", None, where="page", url="u") == [
        {"signal": "tdm-reservation", "value": "1", "where": "page", "url": "u"}]
    assert optout.tdm_header_signals("0", "https://p", where="page", url="u") == []
    assert [s["signal"] for s in optout.tdm_header_signals(None, "https://p", where="page", url="u")] == ["tdm-policy"]
    assert [s["signal"] for s in optout.tdm_header_signals("1", "https://p", where="page", url="u")] == [
        "tdm-reservation", "tdm-policy"]
    assert optout.tdm_header_signals(None, None, where="page", url="u") == []
    assert optout.tdm_meta_signals([("tdm-reservation", "1")], url="u")[0]["signal"] == "meta-tdm-reservation"
    assert optout.tdm_meta_signals([("tdm-reservation", "0")], url="u") == []


def test_tdmrep_json_patterns_first_match_wins():
    rules = optout.TdmRepRules.parse(b'''[
        {"location": "/free/exact.png$", "tdm-reservation": 0},
        {"location": "/free/", "tdm-reservation": 1, "tdm-policy": "https://p"},
        {"location": "/img/*.png", "tdm-reservation": 1},
        {"location": "/", "tdm-reservation": 0}
    ]''')
    assert rules.match("http://h/free/exact.png")["reserved"] is False
    assert rules.match("http://h/free/exact.png.bak")["reserved"] is True
    assert rules.match("http://h/free/other.jpg") == {"location": "/free/", "reserved": True, "policy": "https://p"}
    assert rules.match("http://h/img/a/b.png?x=1")["reserved"] is True
    assert rules.match("http://h/img/a.jpg")["location"] == "/"
    assert optout.tdmrep_signals(rules.match("http://h/img/x.png"), where="image", url="u")[0]["value"] == (
        "location /img/*.png")


def test_a_malformed_tdmrep_json_gives_no_rules():
    for body in (b"", b"not json", b'{"location": "/"}', b'[1, "x", {"no": "location"}]', b"\xff\xfe"):
        assert optout.TdmRepRules.parse(body).match("http://h/a.png") is None


def test_the_config_accepts_only_known_policies():
    base = {"start_url": "http://127.0.0.1/", "work_dir": "/tmp/x"}
    assert CrawlConfig.from_dict(base).optout_policy == "respect"
    assert CrawlConfig.from_dict({**base, "optout_policy": "ignore"}).optout_policy == "ignore"
    try:
        CrawlConfig.from_dict({**base, "optout_policy": "maybe"})
    except ConfigError as exc:
        assert "optout_policy" in str(exc)
    else:
        raise AssertionError("an unknown policy was accepted")
