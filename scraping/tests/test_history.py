"""Scrape history figures: average throughput across the user's finished scrapes and per-site outcome counts,
on the scraping page and in the API; other users' scrapes never count."""

from __future__ import annotations

import pytest
from django.utils import timezone

from imagineer.models import JobStatus
from imagineer.services import api_token_create
from scraping.selectors import history_stats
from scraping.tests.test_views import finished_job


def counters(**values):
    return {"pages": 0, "downloaded": 0, "imported": 0, "duplicates": 0, "failed": 0, "opted_out": 0, **values}


@pytest.fixture
def history(user, other_user):
    finished_job(user, seconds=10, start_url="https://a.example/x/",
                 counters=counters(pages=20, downloaded=30, imported=25, duplicates=3, failed=2, opted_out=4))
    finished_job(user, seconds=30, start_url="https://a.example/y/",
                 counters=counters(pages=10, downloaded=10, imported=5, duplicates=1, failed=0, opted_out=1))
    # An older job's counters lack opted_out: it counts as 0.
    finished_job(user, seconds=20, start_url="https://b.example/",
                 counters={"pages": 30, "downloaded": 20, "imported": 12, "duplicates": 2, "failed": 6})
    # Not finished: not part of the figures.
    finished_job(user, start_url="https://c.example/", status=JobStatus.RUNNING, finished_at=None,
                 started_at=timezone.now())
    finished_job(other_user, seconds=1, start_url="https://a.example/",
                 counters=counters(pages=1000, downloaded=1000, imported=1000))


def test_average_throughput_is_the_total_over_the_total_crawl_time(user, history):
    stats = history_stats(user)
    assert stats["jobs"] == 3 and stats["seconds"] == pytest.approx(60, abs=0.5)
    assert stats["pages"] == 60 and stats["downloaded"] == 60
    assert stats["pages_per_second"] == pytest.approx(1.0, rel=0.02)
    assert stats["images_per_second"] == pytest.approx(1.0, rel=0.02)


def test_per_domain_counts_of_imported_duplicate_failed_and_opted_out(user, history):
    rows = {r["domain"]: r for r in history_stats(user)["domains"]}
    assert rows == {
        "a.example": {"domain": "a.example", "jobs": 2, "imported": 30, "duplicates": 4, "failed": 2, "opted_out": 5},
        "b.example": {"domain": "b.example", "jobs": 1, "imported": 12, "duplicates": 2, "failed": 6, "opted_out": 0},
    }


def test_no_history_has_no_rates(user):
    stats = history_stats(user)
    assert stats["jobs"] == 0 and stats["pages_per_second"] is None and stats["domains"] == []


def test_the_page_and_the_api_show_the_figures(user, user_client, history):
    html = user_client.get("/scrapes/").content.decode()
    assert 'data-testid="avg-pages">1.00<' in html and 'data-testid="avg-images">1.00<' in html
    assert ('<tr data-domain="a.example"><td>a.example</td><td>2</td><td>30</td>\n'
            '          <td>4</td><td>2</td><td>5</td></tr>') in html
    token = api_token_create(user=user, name="t")[1]
    body = user_client.get("/api/scrapes/stats", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert body["jobs"] == 3 and body["pages_per_second"] == pytest.approx(1.0, rel=0.02)
    assert {r["domain"]: r["opted_out"] for r in body["domains"]} == {"a.example": 5, "b.example": 0}


def test_the_items_filter_has_an_opted_out_bucket(user, user_client):
    from scraping.models import Outcome
    from scraping.tests.test_views import add_items

    job = finished_job(user)
    add_items(job, ("a.jpg", Outcome.IMPORTED, "", ""),
              ("b.jpg", Outcome.OPTED_OUT, "x-robots-tag noai on the image", ""))
    html = user_client.get(job.get_absolute_url()).content.decode()
    assert "Opted out (1)" in html
    filtered = user_client.get(f"{job.get_absolute_url()}?outcome=opted_out").content.decode()
    assert "img/b.jpg" in filtered and "img/a.jpg" not in filtered
    assert "x-robots-tag noai on the image" in filtered
