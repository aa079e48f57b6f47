"""Opt-outs through real scrape jobs (worker, crawl subprocess, the opt-out site on 127.0.0.1): opted-out
images become "opted_out" items and never gallery images; staff may ignore opt-outs for a scrape, and then
the images carry the signal in their provenance. The policy is enforced in the service, the form and the API."""

from __future__ import annotations

import pytest

from gallery.models import Image, ImageProvenance, OptOutStatus
from imagineer.models import JobStatus
from imagineer.services import api_token_create
from scraping.models import Outcome, ScrapedItem, ScrapeJob
from scraping.services import ScrapeInputError, scrape_job_start
from scraping.tests.conftest import JOB_OPTIONS
from scraping.tests.optout_site import CC_BY_SA, EXPECTED, OptOutSite

OPTED_OUT = sorted(p for p, v in EXPECTED.items() if v)
KEPT = sorted(p for p, v in EXPECTED.items() if not v)


@pytest.fixture(scope="module")
def optout_site_server():
    site = OptOutSite().start()
    yield site
    site.stop()


def _run(owner, site, run_worker, **options):
    job = scrape_job_start(user=owner, start_url=site.url("/"), album_name="Consent",
                           **{**JOB_OPTIONS, "depth": 1, **options})
    run_worker("scrape")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    return job


@pytest.mark.slow
@pytest.mark.usefixtures("scrape_settings", "no_real_dns")
def test_opted_out_images_are_recorded_with_their_signal_and_never_imported(user, optout_site_server, run_worker):
    site = optout_site_server
    job = _run(user, site, run_worker)
    items = {i.url: i for i in ScrapedItem.objects.filter(job=job)}
    for path in OPTED_OUT:
        item = items[site.url(path)]
        assert item.outcome == Outcome.OPTED_OUT and item.image_id is None, path
        signal, where = EXPECTED[path]
        assert {"signal": signal, "where": where} in [{"signal": s["signal"], "where": s["where"]}
                                                    for s in item.optout], path
        assert signal in item.reason and f"on the {where}" in item.reason
    for path in KEPT:
        assert items[site.url(path)].outcome == Outcome.IMPORTED, path
    assert job.counters["opted_out"] == len(OPTED_OUT) and job.counters["imported"] == len(KEPT)
    assert job.counters["hosts"] == {"127.0.0.1": {"imported": len(KEPT), "duplicates": 0, "failed": 0,
                                                   "opted_out": len(OPTED_OUT)}}
    assert Image.objects.filter(owner=user).count() == len(KEPT)
    assert not Image.objects.filter(source_url__in=[site.url(p) for p in OPTED_OUT]).exists()
    # Imported images: checked, nothing found; the licensed page's licence is on its image.
    provenance = {p.image.source_url: p for p in ImageProvenance.objects.select_related("image")}
    assert {p.optout_status for p in provenance.values()} == {OptOutStatus.NONE}
    licensed = provenance[site.url("/i/licensed.png")]
    assert (licensed.licence, licensed.licence_url, licensed.artist) == ("CC BY-SA 4.0", CC_BY_SA, "Ada Example")
    assert licensed.fetched_at is not None
    assert provenance[site.url("/i/clean.png")].licence == ""


@pytest.mark.slow
@pytest.mark.usefixtures("scrape_settings", "no_real_dns")
def test_staff_may_ignore_opt_outs_and_the_images_keep_the_signal(staff_user, optout_site_server, run_worker):
    site = optout_site_server
    job = _run(staff_user, site, run_worker, optout_policy="ignore")
    assert job.counters["opted_out"] == 0 and job.counters["imported"] == len(EXPECTED)
    for path in OPTED_OUT:
        item = ScrapedItem.objects.get(job=job, url=site.url(path))
        assert item.outcome == Outcome.IMPORTED and item.optout, path
        prov = item.image.provenance
        assert prov.optout_status == OptOutStatus.OPTED_OUT and prov.optout_signals == item.optout
    clean = ScrapedItem.objects.get(job=job, url=site.url("/i/clean.png")).image.provenance
    assert clean.optout_status == OptOutStatus.NONE and clean.optout_signals == []


def test_only_staff_may_ignore_opt_outs_in_the_service(user, settings):
    settings.SCRAPE_ALLOW_PRIVATE = True
    with pytest.raises(ScrapeInputError, match="Only staff"):
        scrape_job_start(user=user, start_url="http://127.0.0.1:9/", enqueue=False, optout_policy="ignore")
    with pytest.raises(ScrapeInputError, match="opt-out policy"):
        scrape_job_start(user=user, start_url="http://127.0.0.1:9/", enqueue=False, optout_policy="perhaps")
    assert ScrapeJob.objects.count() == 0
    job = scrape_job_start(user=user, start_url="http://127.0.0.1:9/", enqueue=False)
    assert job.optout_policy == "respect"


def test_only_staff_may_ignore_opt_outs_in_the_form_and_the_api(user_client, staff_client, user, settings,
                                                                  redis_conn):
    settings.SCRAPE_ALLOW_PRIVATE = True
    form = {"start_url": "http://127.0.0.1:9/", "max_pages": 5, "max_images": 5, "depth": 0, "min_width": 0,
            "min_height": 0, "min_bytes": 0, "delay": 0, "optout_policy": "ignore"}
    page = user_client.get("/scrapes/")
    assert b'value="ignore"' not in page.content
    response = user_client.post("/scrapes/start/", form)
    assert response.status_code == 400 and "Select a valid choice" in response.content.decode()
    token = api_token_create(user=user, name="t")[1]
    response = user_client.post("/api/scrapes", {"start_url": "http://127.0.0.1:9/", "optout_policy": "ignore"},
                                content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 400 and "Only staff" in response.json()["detail"]
    assert ScrapeJob.objects.count() == 0
    assert b'value="ignore"' in staff_client.get("/scrapes/").content
    response = staff_client.post("/scrapes/start/", form)
    assert response.status_code == 302
    job = ScrapeJob.objects.get()
    assert job.optout_policy == "ignore"
    assert "ignored: opted-out images are imported" in staff_client.get(job.get_absolute_url()).content.decode()


def test_the_command_ignores_opt_outs_only_for_staff_owners(user, staff_user, settings):
    from django.core.management import CommandError, call_command

    settings.SCRAPE_ALLOW_PRIVATE = True
    with pytest.raises(CommandError, match="Only staff"):
        call_command("scrape", "http://127.0.0.1:9/", "--owner", user.username, "--ignore-optouts")
    assert ScrapeJob.objects.count() == 0
