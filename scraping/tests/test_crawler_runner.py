"""crawl_runner on its own: config rules, and children that crash, hang, chatter or finish (fake commands)."""

from __future__ import annotations

import sys
import textwrap
import time

import pytest

from scraping.crawl_runner import ConfigError, prepare_config, run_crawl


def fake_child(body: str) -> list[str]:
    """A stand-in for the crawl process: reads the config from stdin like the real one, then runs ``body``."""
    prelude = "import json, signal, sys, time\nconfig = json.load(sys.stdin)\n"
    return [sys.executable, "-c", prelude + textwrap.dedent(body)]


@pytest.fixture
def base_config(tmp_path):
    return {"start_url": "http://example.com/", "work_dir": str(tmp_path / "work")}


def test_settings_give_the_defaults_and_the_safety_rules(settings, base_config):
    settings.SCRAPE_ALLOW_PRIVATE = False
    settings.SCRAPE_MAX_RESPONSE_BYTES = 12345
    settings.SCRAPE_USER_AGENT = "TestBot/1"
    cfg = prepare_config(base_config)
    assert (cfg["max_response_bytes"], cfg["user_agent"], cfg["allow_private"]) == (12345, "TestBot/1", False)
    assert prepare_config({**base_config, "max_response_bytes": 5000})["max_response_bytes"] == 5000
    with pytest.raises(ConfigError, match="SCRAPE_ALLOW_PRIVATE"):
        prepare_config({**base_config, "allow_private": True})
    with pytest.raises(ConfigError, match="SCRAPE_ALLOW_PRIVATE"):
        prepare_config({**base_config, "host_overrides": {"a.test": "127.0.0.1"}})

    settings.SCRAPE_ALLOW_PRIVATE = True
    assert prepare_config(base_config)["allow_private"] is True
    assert prepare_config({**base_config, "allow_private": False})["allow_private"] is False  # may narrow
    with pytest.raises(ConfigError, match="unknown configuration keys"):
        prepare_config({**base_config, "depht": 3})


def test_an_invalid_config_raises_before_anything_starts(base_config):
    with pytest.raises(ConfigError, match="scheme 'file'"):
        run_crawl({**base_config, "start_url": "file:///etc/passwd"}, on_event=print, should_stop=lambda: False)


def test_events_stream_in_as_they_come_and_done_gives_the_outcome(base_config, tmp_path):
    seen: list[tuple[float, dict]] = []
    command = fake_child(
        """
        print(json.dumps({"event": "started", "start_url": config["start_url"]}), flush=True)
        time.sleep(0.6)
        print("not json at all", flush=True)
        print(json.dumps({"event": "done", "reason": "finished", "limits_hit": ["depth"],
                          "stats": {"pages": 3}, "error": None}), flush=True)
        """
    )
    start = time.monotonic()
    outcome = run_crawl(
        base_config,
        on_event=lambda e: seen.append((time.monotonic() - start, e)),
        should_stop=lambda: False,
        command=command,
        log_path=tmp_path / "my.log",
    )
    assert [e["event"] for _t, e in seen] == ["started", "log", "done"]
    assert seen[0][0] < seen[2][0] - 0.4  # the first event arrived before the child finished
    assert seen[1][1]["message"] == "not json at all"
    assert (outcome.reason, outcome.stats, outcome.limits_hit) == ("finished", {"pages": 3}, ["depth"])
    assert outcome.returncode == 0
    assert outcome.ok and outcome.events == 3


def test_a_crash_is_a_clear_error(base_config, tmp_path):
    command = fake_child(
        """
        print(json.dumps({"event": "started"}), flush=True)
        raise RuntimeError("the crawler blew up")
        """
    )
    outcome = run_crawl(base_config, on_event=lambda e: None, should_stop=lambda: False, command=command)
    assert outcome.reason == "crashed" and not outcome.ok
    assert outcome.returncode == 1
    assert "without finishing" in outcome.error and "the crawler blew up" in outcome.error
    assert "RuntimeError" in (tmp_path / "work" / "crawl.log").read_text()  # stderr lands in the log


def test_should_stop_sends_sigint_and_the_child_reports_cancelled(base_config):
    command = fake_child(
        """
        def stop(*_):
            print(json.dumps({"event": "done", "reason": "cancelled", "stats": {}, "error": None}), flush=True)
            sys.exit(0)
        signal.signal(signal.SIGINT, stop)
        print(json.dumps({"event": "started"}), flush=True)
        time.sleep(60)
        """
    )
    events = []
    asked = []

    def should_stop():
        asked.append(time.monotonic())
        return bool(events)

    start = time.monotonic()
    outcome = run_crawl(base_config, on_event=events.append, should_stop=should_stop, command=command)
    assert outcome.reason == "cancelled" and outcome.cancelled
    assert time.monotonic() - start < 5
    gaps = [b - a for a, b in zip(asked, asked[1:], strict=False)]
    assert all(g <= 0.5 for g in gaps)


def test_a_child_that_ignores_sigint_is_killed_after_the_grace_period(base_config):
    command = fake_child(
        """
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(json.dumps({"event": "started"}), flush=True)
        time.sleep(60)
        """
    )
    start = time.monotonic()
    outcome = run_crawl(base_config, on_event=lambda e: None, should_stop=lambda: True, command=command, kill_grace=0.5)
    assert time.monotonic() - start < 5
    assert outcome.reason == "killed" and "killed" in outcome.error and outcome.returncode == -9


def test_the_timeout_stops_a_crawl_that_runs_too_long(base_config):
    command = fake_child(
        """
        signal.signal(signal.SIGINT, lambda *_: (print(json.dumps({"event": "done", "reason": "cancelled",
                      "stats": {}, "error": None}), flush=True), sys.exit(0)))
        time.sleep(60)
        """
    )
    outcome = run_crawl(base_config, on_event=lambda e: None, should_stop=lambda: False, command=command, timeout=0.5)
    assert outcome.reason == "timeout" and "ran past" in outcome.error


def test_a_failing_callback_stops_the_crawl_instead_of_raising(base_config):
    command = fake_child(
        """
        signal.signal(signal.SIGINT, lambda *_: (print(json.dumps({"event": "done", "reason": "cancelled",
                      "stats": {}, "error": None}), flush=True), sys.exit(0)))
        print(json.dumps({"event": "started"}), flush=True)
        time.sleep(60)
        """
    )

    def on_event(event):
        raise RuntimeError("database is down")

    outcome = run_crawl(base_config, on_event=on_event, should_stop=lambda: False, command=command)
    assert outcome.reason == "cancelled" and "database is down" in outcome.error and not outcome.ok


def test_a_child_that_cannot_start_is_an_outcome_not_an_exception(base_config, tmp_path):
    outcome = run_crawl(
        base_config, on_event=lambda e: None, should_stop=lambda: False, command=[str(tmp_path / "no-such-program")]
    )
    assert outcome.reason == "crashed" and "could not start" in outcome.error
