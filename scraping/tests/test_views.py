"""Scraping pages: the start form and its URL checks, the history, the job page, cancel, re-run, access."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from gallery import services as gallery_services
from imagineer.jobs import get_queue
from imagineer.models import JobStatus
from scraping.models import Outcome, ScrapedItem, ScrapeJob, Stage

pytestmark = pytest.mark.usefixtures("no_real_dns")

HTMX = {"HTTP_HX_REQUEST": "true"}
FORM = {
    "start_url": "http://127.0.0.1:9/gallery/",
    "album": "",
    "album_name": "",
    "max_pages": "50",
    "max_images": "20",
    "depth": "1",
    "allowed_domains": "",
    "min_width": "64",
    "min_height": "64",
    "min_bytes": "1024",
    "obey_robots": "on",
    "delay": "0.5",
    "autothrottle": "on",
}


@pytest.fixture
def allow_loopback(settings):
    settings.SCRAPE_ALLOW_PRIVATE = True
    return settings


def finished_job(owner, *, seconds: float = 10.0, **fields) -> ScrapeJob:
    now = timezone.now()
    values = {
        "start_url": "https://example.com/photos/",
        "album_name": "example.com",
        "status": JobStatus.SUCCEEDED,
        "stage": Stage.DONE,
        "progress": 1.0,
        "started_at": now - timedelta(seconds=seconds),
        "finished_at": now,
        "counters": {"pages": 20, "pages_failed": 2, "discovered": 60, "downloaded": 50, "imported": 40,
                     "duplicates": 5, "too_small": 3, "failed": 10, "skipped": 2},
        "error_buckets": {"http_404": 3, "timeout": 1},
        "crawl_reason": "finished",
        "log_tail": "INFO Crawl started at https://example.com/photos/\nINFO Crawl ended: finished",
        **fields,
    }
    return ScrapeJob.objects.create(owner=owner, **values)


def add_items(job, *rows) -> list[ScrapedItem]:
    return ScrapedItem.objects.bulk_create(
        ScrapedItem(job=job, seq=n, url=f"https://example.com/img/{name}", page_url="https://example.com/photos/",
                    outcome=outcome, reason=reason, bucket=bucket, alt=f"alt of {name}")
        for n, (name, outcome, reason, bucket) in enumerate(rows, start=1)
    )


# -- the start form ---------------------------------------------------------------------------------------

def test_it_starts_a_scrape_from_the_form_and_queues_it(
    user_client, user, allow_loopback, redis_conn, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = user_client.post("/scrapes/start/", {**FORM, "album_name": "Birds"})
    job = ScrapeJob.objects.get()
    assert response.status_code == 302 and response["Location"] == job.get_absolute_url()
    assert (job.owner, job.start_url, job.album, job.album_name) == (user, FORM["start_url"], None, "Birds")
    assert (job.max_pages, job.max_images, job.depth, job.min_width, job.min_bytes) == (50, 20, 1, 64, 1024)
    assert (job.obey_robots, job.autothrottle, job.delay, job.status) == (True, True, 0.5, JobStatus.QUEUED)
    assert get_queue("scrape").job_ids == [job.rq_job_id]


def test_the_album_defaults_to_the_host_or_an_existing_album_of_the_user(
    user_client, user, other_user, allow_loopback, redis_conn
):
    user_client.post("/scrapes/start/", {**FORM, "obey_robots": ""})
    first = ScrapeJob.objects.get()
    assert first.album_name == "127.0.0.1" and first.obey_robots is False
    mine = gallery_services.album_create(owner=user, name="Mine")
    user_client.post("/scrapes/start/", {**FORM, "album": str(mine.pk)})
    assert ScrapeJob.objects.latest("pk").album == mine
    theirs = gallery_services.album_create(owner=other_user, name="Theirs")
    response = user_client.post("/scrapes/start/", {**FORM, "album": str(theirs.pk)})
    assert response.status_code == 400 and "Select a valid choice" in response.content.decode()
    assert ScrapeJob.objects.count() == 2


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.0.0.1/", "private address 10.0.0.1"),
        ("http://169.254.169.254/latest/meta-data/", "link-local address 169.254.169.254"),
        ("http://[::ffff:10.0.0.1]/", "private address ::ffff:10.0.0.1"),
        ("http://0x7f000001/", "loopback address 127.0.0.1"),
        ("http://[::1]:8000/", "loopback address ::1"),
        ("file:///etc/passwd", "scheme &#x27;file&#x27; is not allowed"),
        ("ftp://example.com/", "scheme &#x27;ftp&#x27; is not allowed"),
        ("example.com/photos", "no scheme"),
        ("http://user:pw@example.com/", "credentials in the URL"),
    ],
)
def test_the_form_refuses_urls_the_scraper_must_not_fetch(user_client, url, reason, settings):
    settings.SCRAPE_ALLOW_PRIVATE = False
    response = user_client.post("/scrapes/start/", {**FORM, "start_url": url})
    assert response.status_code == 400
    body = response.content.decode()
    assert "This URL cannot be scraped" in body and reason in body
    assert ScrapeJob.objects.count() == 0


def test_the_allow_setting_admits_loopback_only(user_client, allow_loopback, redis_conn):
    response = user_client.post("/scrapes/start/", {**FORM, "start_url": "http://10.0.0.1/"})
    assert response.status_code == 400 and "private address 10.0.0.1" in response.content.decode()
    assert user_client.post("/scrapes/start/", FORM).status_code == 302


def test_host_names_are_judged_by_the_addresses_they_resolve_to(
    user_client, allow_loopback, redis_conn, django_capture_on_commit_callbacks
):
    allow_loopback.SCRAPE_TEST_HOST_OVERRIDES = {"private.test": "10.0.0.1", "mapped.test": "::ffff:10.0.0.1",
                                                 "multi.test": "127.0.0.1,10.0.0.1", "site.test": "127.0.0.1"}
    for url, needle in (("http://private.test/", "resolves to a private address 10.0.0.1"),
                        ("http://mapped.test/", "private address ::ffff:10.0.0.1"),
                        ("http://multi.test/", "private address 10.0.0.1"),
                        ("http://nowhere.test/", "does not resolve")):
        response = user_client.post("/scrapes/start/", {**FORM, "start_url": url})
        assert response.status_code == 400 and needle in response.content.decode(), url
    assert ScrapeJob.objects.count() == 0
    with django_capture_on_commit_callbacks(execute=True):
        assert user_client.post("/scrapes/start/", {**FORM, "start_url": "http://site.test:9/"}).status_code == 302
    assert ScrapeJob.objects.get().album_name == "site.test"


def test_bad_limits_and_domains_are_form_errors(user_client, allow_loopback):
    response = user_client.post("/scrapes/start/", {**FORM, "max_pages": "0", "depth": "99",
                                                    "allowed_domains": "example.com, bad domain!"})
    body = response.content.decode()
    assert response.status_code == 400
    assert "greater than or equal to 1" in body and "less than or equal to 50" in body
    assert "is not a domain name" in body
    assert ScrapeJob.objects.count() == 0


def test_a_down_queue_is_a_clear_error_and_creates_nothing(user_client, allow_loopback, settings):
    settings.RQ_QUEUES = {name: {"URL": "redis://127.0.0.1:1/0"} for name in settings.RQ_QUEUES}
    response = user_client.post("/scrapes/start/", FORM)
    assert response.status_code == 400 and "not reachable" in response.content.decode()
    assert ScrapeJob.objects.count() == 0


# -- the history ------------------------------------------------------------------------------------------

def test_the_history_lists_own_scrapes_with_duration_rates_and_error_buckets(user_client, user, other_user):
    job = finished_job(user, seconds=10)
    other = finished_job(other_user, start_url="https://elsewhere.org/")
    running = finished_job(user, status=JobStatus.RUNNING, stage=Stage.CRAWLING, finished_at=None,
                           start_url="https://busy.example.net/")
    response = user_client.get("/scrapes/")
    body = response.content.decode()
    assert response.status_code == 200
    assert f"#{job.pk} example.com" in body and f"#{running.pk} busy.example.net" in body
    assert "elsewhere.org" not in body and f"#{other.pk} " not in body
    row = body[body.index(f'id="scrape-{job.pk}"'):]
    row = row[:row.index("</tr>")]
    assert "10.0s" in row  # duration
    assert ">2.00<" in row  # 20 pages in 10 s
    assert ">5.00<" in row  # 50 images in 10 s
    assert "http_404 × 3" in row and "timeout × 1" in row
    assert row.index("http_404") < row.index("timeout")  # most frequent first
    assert "crawling" in body  # a running job shows its stage
    assert 'name="start_url"' in body and 'value="100"' in body  # the form with its defaults


def test_the_pages_need_a_login(client, user):
    job = finished_job(user)
    for url in ("/scrapes/", f"/scrapes/jobs/{job.pk}/", f"/scrapes/jobs/{job.pk}/items/"):
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert client.post("/scrapes/start/", FORM).status_code == 302
    assert ScrapeJob.objects.count() == 1


# -- the job page -----------------------------------------------------------------------------------------

def test_the_job_page_shows_counters_log_and_every_item(user_client, user, ingest):
    job = finished_job(user)
    image = ingest(user, seed=3)
    add_items(job, ("a.jpg", Outcome.IMPORTED, "", ""), ("b.jpg", Outcome.FAILED, "HTTP 404", "http_404"),
              ("c.jpg", Outcome.DUPLICATE, "already in the gallery", ""), ("d.png", Outcome.TOO_SMALL, "10×10", ""))
    ScrapedItem.objects.filter(job=job, url__endswith="a.jpg").update(image=image)
    ScrapedItem.objects.filter(job=job, url__endswith="c.jpg").update(image=image)
    body = user_client.get(job.get_absolute_url()).content.decode()
    assert f"Scrape #{job.pk} of example.com" in body
    assert 'data-counter="imported">40<' in body and 'data-counter="pages">20<' in body
    assert "INFO Crawl ended: finished" in body  # the log tail
    assert "<progress" in body and 'value="100"' in body
    assert "hx-trigger" not in body  # a finished job does not poll
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.png"):
        assert f"https://example.com/img/{name}" in body
    assert f"of image {image.pk}" in body and "http_404" in body and "HTTP 404" in body
    assert 'rel="noopener noreferrer nofollow"' in body
    assert "Run again" in body
    assert "All (4)" in body and "Failed (1)" in body


def test_the_items_filter_by_outcome(user_client, user):
    job = finished_job(user)
    add_items(job, ("a.jpg", Outcome.IMPORTED, "", ""), ("b.jpg", Outcome.FAILED, "HTTP 404", "http_404"),
              ("c.jpg", Outcome.FAILED, "timed out", "timeout"), ("d.jpg", Outcome.DUPLICATE, "", ""))
    partial = user_client.get(f"/scrapes/jobs/{job.pk}/items/?outcome=failed", **HTMX)
    body = partial.content.decode()
    assert partial.status_code == 200 and "<html" not in body
    assert "b.jpg" in body and "c.jpg" in body and "a.jpg" not in body and "d.jpg" not in body
    page = user_client.get(f"/scrapes/jobs/{job.pk}/?outcome=duplicate").content.decode()
    table = page[page.index('id="items"'):]
    assert "d.jpg" in table and "b.jpg" not in table
    # An unknown outcome or page is ignored, not an error.
    assert "a.jpg" in user_client.get(f"/scrapes/jobs/{job.pk}/items/?outcome=nope", **HTMX).content.decode()
    bad_page = user_client.get(f"/scrapes/jobs/{job.pk}/items/?outcome=failed&page=x", **HTMX).content.decode()
    assert "b.jpg" in bad_page and "a.jpg" not in bad_page


def test_a_running_job_polls_its_status_partial(user_client, user):
    job = finished_job(user, status=JobStatus.RUNNING, stage=Stage.CRAWLING, finished_at=None, progress=0.4,
                       message="Crawling: 3 page(s)")
    page = user_client.get(job.get_absolute_url()).content.decode()
    assert f'hx-get="{job.get_absolute_url()}" hx-trigger="every 2s"' in page
    assert "Cancel" in page and "Run again" not in page
    partial = user_client.get(job.get_absolute_url(), **HTMX)
    body = partial.content.decode()
    assert partial.status_code == 200 and body.lstrip().startswith('<div id="job-status"')
    assert "Crawling: 3 page(s)" in body and 'value="40"' in body and ">Crawling</span>" in body


def test_cancel_stops_a_queued_job_and_flags_a_running_one(user_client, user):
    queued = ScrapeJob.objects.create(owner=user, start_url="https://example.com/", album_name="x")
    response = user_client.post(f"/scrapes/jobs/{queued.pk}/cancel/")
    assert response.status_code == 302
    queued.refresh_from_db()
    assert queued.status == JobStatus.CANCELLED
    running = finished_job(user, status=JobStatus.RUNNING, finished_at=None)
    partial = user_client.post(f"/scrapes/jobs/{running.pk}/cancel/", **HTMX)
    running.refresh_from_db()
    assert running.cancel_requested and running.status == JobStatus.RUNNING
    assert "Cancelling" in partial.content.decode()


def test_rerun_starts_the_same_scrape_again(
    user_client, user, allow_loopback, redis_conn, django_capture_on_commit_callbacks
):
    album = gallery_services.album_create(owner=user, name="Kept")
    job = finished_job(user, start_url="http://127.0.0.1:9/", album=album, album_name="Kept", depth=3,
                       max_images=7, min_width=10, delay=0.2, allowed_domains=["127.0.0.1"])
    with django_capture_on_commit_callbacks(execute=True):
        response = user_client.post(f"/scrapes/jobs/{job.pk}/rerun/")
    again = ScrapeJob.objects.latest("pk")
    assert response.status_code == 302 and response["Location"] == again.get_absolute_url()
    assert again.pk != job.pk and again.rerun_of == job and again.status == JobStatus.QUEUED
    assert (again.album, again.depth, again.max_images, again.min_width, again.delay, again.allowed_domains) == (
        album, 3, 7, 10, 0.2, ["127.0.0.1"])
    assert get_queue("scrape").job_ids == [again.rq_job_id]


def test_rerun_of_a_url_that_is_refused_now_is_a_message(user_client, user, settings):
    settings.SCRAPE_ALLOW_PRIVATE = False
    job = finished_job(user, start_url="http://127.0.0.1:9/")
    response = user_client.post(f"/scrapes/jobs/{job.pk}/rerun/", follow=True)
    assert "loopback address 127.0.0.1" in response.content.decode()
    assert ScrapeJob.objects.count() == 1


def stored_log(job: ScrapeJob, text: str) -> ScrapeJob:
    """The log a worker uploaded for `job`, in the artifacts storage."""
    from imagineer.artifacts import artifact_save

    job.log_key = artifact_save(f"scrapes/{job.pk}/log.txt", text.encode())
    job.save(update_fields=["log_key"])
    return job


def test_the_full_log_downloads_from_the_artifacts_storage(user_client, user, artifacts_root):
    job = stored_log(finished_job(user), "2026-11-21 INFO Spider opened\n")
    page = user_client.get(job.get_absolute_url()).content.decode()
    assert f'href="/scrapes/jobs/{job.pk}/log.txt"' in page
    response = user_client.get(f"/scrapes/jobs/{job.pk}/log.txt")
    assert response.status_code == 200 and b"Spider opened" in b"".join(response.streaming_content)
    assert response["Content-Disposition"].startswith("attachment")
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    not_yet = finished_job(user, status=JobStatus.RUNNING, finished_at=None)
    assert "Download the full log" not in user_client.get(not_yet.get_absolute_url()).content.decode()
    assert user_client.get(f"/scrapes/jobs/{not_yet.pk}/log.txt").status_code == 404
    gone = finished_job(user, log_key="scrapes/999999/log.txt")
    assert user_client.get(f"/scrapes/jobs/{gone.pk}/log.txt").status_code == 404


# -- access -----------------------------------------------------------------------------------------------

def test_other_users_scrapes_are_404_everywhere(other_client, user, artifacts_root):
    job = stored_log(finished_job(user, status=JobStatus.RUNNING, finished_at=None), "secret")
    for url in (f"/scrapes/jobs/{job.pk}/", f"/scrapes/jobs/{job.pk}/items/", f"/scrapes/jobs/{job.pk}/log.txt"):
        assert other_client.get(url).status_code == 404, url
        assert other_client.get(url, **HTMX).status_code == 404, url
    for url in (f"/scrapes/jobs/{job.pk}/cancel/", f"/scrapes/jobs/{job.pk}/rerun/"):
        assert other_client.post(url).status_code == 404, url
    job.refresh_from_db()
    assert not job.cancel_requested and ScrapeJob.objects.count() == 1


def test_staff_see_everyones_scrapes_in_the_admin(staff_client, user, other_user):
    mine = finished_job(user, start_url="https://alice.example/")
    theirs = finished_job(other_user, start_url="https://bob.example/")
    add_items(theirs, ("x.jpg", Outcome.FAILED, "HTTP 500", "http_500"))
    changelist = staff_client.get("/admin/scraping/scrapejob/").content.decode()
    assert "alice.example" in changelist and "bob.example" in changelist
    assert staff_client.get(f"/admin/scraping/scrapejob/{mine.pk}/change/").status_code == 200
    items = staff_client.get("/admin/scraping/scrapeditem/?outcome__exact=failed").content.decode()
    assert "https://bob.example/img/x.jpg" not in items and "https://example.com/img/x.jpg" in items
    # Staff may look at anyone's job page, but a re-run is the owner's own.
    assert staff_client.get(theirs.get_absolute_url()).status_code == 200
    assert staff_client.post(f"/scrapes/jobs/{theirs.pk}/rerun/").status_code == 404


def test_the_admin_is_staff_only(user_client, user):
    finished_job(user)
    response = user_client.get("/admin/scraping/scrapejob/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_image_page_names_the_scrape_it_came_from(user_client, user, ingest):
    job = finished_job(user)
    image = ingest(user, seed=4, source="scrape", source_url="https://example.com/img/a.jpg",
                   source_page_url="https://example.com/photos/")
    add_items(job, ("a.jpg", Outcome.IMPORTED, "", ""))
    ScrapedItem.objects.filter(job=job).update(image=image)
    body = user_client.get(image.get_absolute_url()).content.decode()
    assert "Scrape job" in body and f'href="{job.get_absolute_url()}"' in body and f"#{job.pk} of example.com" in body


def test_the_status_partial_shows_its_own_messages_once_and_clears_stale_ones_when_the_job_ends(user_client, user):
    running = finished_job(user, status=JobStatus.RUNNING, finished_at=None)
    partial = user_client.post(f"/scrapes/jobs/{running.pk}/cancel/", **HTMX).content.decode()
    assert 'hx-swap-oob="innerHTML"' in partial and "Cancelling: the crawl stops within seconds" in partial
    assert "Cancelling: the crawl" not in user_client.get("/scrapes/").content.decode()
    assert 'id="messages" hx-swap-oob' not in user_client.get(running.get_absolute_url(), **HTMX).content.decode()
    ScrapeJob.objects.filter(pk=running.pk).update(status=JobStatus.CANCELLED)
    final = user_client.get(running.get_absolute_url(), **HTMX).content.decode()
    assert '<div id="messages" hx-swap-oob="innerHTML"></div>' in final
