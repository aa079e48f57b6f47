"""The scraping JSON API: the same checks and access rules as the pages."""

from __future__ import annotations

import pytest

from imagineer.models import JobStatus
from imagineer.services import api_token_create
from scraping.models import Outcome, ScrapeJob
from scraping.tests.test_views import add_items, finished_job

pytestmark = pytest.mark.usefixtures("no_real_dns")


@pytest.fixture
def token(user):
    return api_token_create(user=user, name="t")[1]


def auth(token):
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_it_starts_lists_and_shows_scrapes(client, user, token, settings, redis_conn,
                                           django_capture_on_commit_callbacks):
    settings.SCRAPE_ALLOW_PRIVATE = True
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/api/scrapes", {"start_url": "http://127.0.0.1:9/", "depth": 0, "max_images": 5},
                               content_type="application/json", **auth(token))
    assert response.status_code == 201, response.content
    body = response.json()
    job = ScrapeJob.objects.get(pk=body["id"])
    assert (job.owner, job.depth, job.max_images, job.album_name) == (user, 0, 5, "127.0.0.1")
    assert body["status"] == "queued" and body["url"] == job.get_absolute_url()
    listing = client.get("/api/scrapes", **auth(token)).json()
    assert [row["id"] for row in listing["items"]] == [job.pk]
    cancelled = client.post(f"/api/scrapes/{job.pk}/cancel", **auth(token)).json()
    assert cancelled["status"] == JobStatus.CANCELLED


def test_refused_urls_and_bad_limits_are_400(client, user, token, settings):
    settings.SCRAPE_ALLOW_PRIVATE = False
    for payload, needle in (({"start_url": "http://127.0.0.1/"}, "loopback address 127.0.0.1"),
                            ({"start_url": "http://169.254.169.254/"}, "link-local"),
                            ({"start_url": "https://example.com/", "depth": 500}, "depth must be between"),
                            ({"start_url": "https://example.com/"}, "does not resolve")):
        response = client.post("/api/scrapes", payload, content_type="application/json", **auth(token))
        assert response.status_code == 400 and needle in response.json()["detail"], response.content
    assert ScrapeJob.objects.count() == 0


def test_items_filter_and_others_jobs_are_404(client, user, other_user, token):
    job = finished_job(user)
    add_items(job, ("a.jpg", Outcome.IMPORTED, "", ""), ("b.jpg", Outcome.FAILED, "HTTP 404", "http_404"))
    failed = client.get(f"/api/scrapes/{job.pk}/items?outcome=failed", **auth(token)).json()
    assert [(i["url"], i["bucket"]) for i in failed["items"]] == [("https://example.com/img/b.jpg", "http_404")]
    assert client.get(f"/api/scrapes/{job.pk}/items?outcome=nope", **auth(token)).status_code == 400
    detail = client.get(f"/api/scrapes/{job.pk}", **auth(token)).json()
    assert detail["duration_s"] == pytest.approx(10, abs=0.5) and detail["pages_per_second"] == pytest.approx(2, 0.1)
    theirs = finished_job(other_user)
    for method, url in (("get", f"/api/scrapes/{theirs.pk}"), ("get", f"/api/scrapes/{theirs.pk}/items"),
                        ("post", f"/api/scrapes/{theirs.pk}/cancel")):
        assert getattr(client, method)(url, **auth(token)).status_code == 404, url
    assert client.get("/api/scrapes").status_code == 401
