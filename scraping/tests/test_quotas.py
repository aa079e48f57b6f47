"""The per-user limit on scrapes queued or running at once: service, start form, re-run, API and command."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from imagineer.models import JobStatus, UserLimits
from imagineer.quotas import QuotaExceeded
from imagineer.services import api_token_create
from scraping import services
from scraping.models import ScrapeJob
from scraping.tests.test_views import FORM, finished_job

pytestmark = pytest.mark.usefixtures("no_real_dns")
URL = "http://127.0.0.1:9/gallery/"


@pytest.fixture
def one_scrape_each(settings):
    settings.SCRAPE_ALLOW_PRIVATE = True
    settings.MAX_ACTIVE_SCRAPES_PER_USER = 1
    return settings


def test_a_user_at_the_limit_cannot_start_another_scrape(user, other_user, one_scrape_each, redis_conn):
    first = services.scrape_job_start(user=user, start_url=URL)
    with pytest.raises(QuotaExceeded, match=r"already have 1 scrape waiting or running \(the limit is 1\)"):
        services.scrape_job_start(user=user, start_url=URL)
    assert ScrapeJob.objects.count() == 1

    services.scrape_job_start(user=other_user, start_url=URL)  # the limit is per user
    ScrapeJob.objects.filter(pk=first.pk).update(status=JobStatus.CANCELLED)
    services.scrape_job_start(user=user, start_url=URL)  # finished scrapes do not count
    UserLimits.objects.create(user=user, max_active_scraping=2)
    services.scrape_job_start(user=user, start_url=URL)  # an override raises it for this user only


def test_the_start_form_explains_the_limit_and_starts_nothing(user_client, user, one_scrape_each, redis_conn):
    services.scrape_job_start(user=user, start_url=URL)
    response = user_client.post("/scrapes/start/", FORM)

    assert response.status_code == 429
    assert "You already have 1 scrape waiting or running (the limit is 1)" in response.content.decode()
    assert ScrapeJob.objects.count() == 1


def test_a_rerun_over_the_limit_is_a_message(user_client, user, one_scrape_each, redis_conn):
    done = finished_job(user, start_url=URL)
    services.scrape_job_start(user=user, start_url=URL)
    response = user_client.post(f"/scrapes/jobs/{done.pk}/rerun/", follow=True)

    assert response.status_code == 200 and "the limit is 1" in response.content.decode()
    assert ScrapeJob.objects.count() == 2


def test_the_api_answers_429_with_the_reason(client, user, one_scrape_each, redis_conn):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, name='t')[1]}"}
    assert client.post("/api/scrapes", {"start_url": URL}, content_type="application/json", **auth).status_code == 201
    response = client.post("/api/scrapes", {"start_url": URL}, content_type="application/json", **auth)

    assert response.status_code == 429 and "the limit is 1" in response.json()["detail"]
    assert ScrapeJob.objects.count() == 1


def test_the_command_prints_the_limit(user, one_scrape_each, redis_conn):
    services.scrape_job_start(user=user, start_url=URL)
    with pytest.raises(CommandError, match="the limit is 1"):
        call_command("scrape", URL, "--owner", user.username)
    assert ScrapeJob.objects.count() == 1
