"""Scrape jobs run for real: the `scrape` queue, a worker, a crawl subprocess, the test site on 127.0.0.1.

The figures asserted here follow from the site's definition (scraping/tests/site.py): the crawl from "/"
at depth 2 finds 23 image URLs on 7 pages (3 more pages fail), the crawler saves 9 files, skips a
too-small file and a duplicate, and fails 12 URLs (6 of them refused as unsafe).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from django.core.files.storage import default_storage

from gallery.hooks import lineage_hooks
from gallery.models import Album, Image, ImageSource
from imagineer.artifacts import artifact_storage
from imagineer.jobs import job_cancel
from imagineer.models import JobStatus
from scraping.models import Outcome, ScrapedItem, ScrapeJob, Stage
from scraping.services import scrape_job_rerun, scrape_job_start
from scraping.tests.conftest import JOB_OPTIONS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("scrape_settings", "no_real_dns")]

MAIN_COUNTERS = {
    "pages": 7,
    "pages_failed": 3,
    "discovered": 23,
    "downloaded": 9,
    "imported": 7,
    "duplicates": 1,
    "too_small": 3,
    "failed": 12,
    "skipped": 0,
    "opted_out": 0,
}
MAIN_BUCKETS = {
    "refused_unsafe": 6,
    "http_404": 2,  # an image and a page
    "robots": 2,  # an image and a page
    "offsite": 1,
    "dns": 1,
    "invalid_image": 1,
    "too_large": 1,
    "timeout": 1,
}


def outcomes(job) -> dict[str, int]:
    rows = ScrapedItem.objects.filter(job=job).values_list("outcome", flat=True)
    counted: dict[str, int] = {}
    for outcome in rows:
        counted[outcome] = counted.get(outcome, 0) + 1
    return counted


def item(job, site, path) -> ScrapedItem:
    return ScrapedItem.objects.get(job=job, url=site.url(path))


def start(user, site, path="/", **options):
    return scrape_job_start(user=user, start_url=site.url(path), album_name="Crawled", **{**JOB_OPTIONS, **options})


def work_dirs(settings) -> list[Path]:
    root = Path(settings.WORK_DIR) / "scrapes"
    return list(root.iterdir()) if root.exists() else []


def without_hosts(counters: dict) -> dict:
    return {key: value for key, value in counters.items() if key != "hosts"}


def test_it_scrapes_the_site_into_an_album_and_a_rerun_imports_no_duplicates(
    user, test_site, run_worker, settings
):
    # 50×50 minimum: the 40×40 BMP and the 48×48 TIFF are downloaded but not imported.
    job = start(user, test_site, min_width=50, min_height=50)
    assert job.status == JobStatus.QUEUED and job.stage == Stage.QUEUED
    run_worker("scrape")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.stage == Stage.DONE and job.progress == 1.0
    assert without_hosts(job.counters) == MAIN_COUNTERS
    # Per image host, the four outcomes the history shows add up to the job's own counts.
    for key in ("imported", "duplicates", "failed", "opted_out"):
        assert sum(host[key] for host in job.counters["hosts"].values()) == MAIN_COUNTERS.get(key, 0), key
    assert job.counters["hosts"]["127.0.0.1"]["imported"] == 7
    assert job.error_buckets == MAIN_BUCKETS
    assert (job.crawl_reason, job.limits_hit) == ("finished", ["depth"])
    assert job.message == job.summary()
    assert outcomes(job) == {"imported": 7, "duplicate": 1, "too_small": 3, "failed": 12}

    album = Album.objects.get(owner=user, name="Crawled")
    assert job.album == album
    images = list(album.ordered_images())
    assert len(images) == 7 and Image.objects.filter(owner=user).count() == 7
    assert {i.source for i in images} == {ImageSource.SCRAPE}

    # Original bytes, lineage, alt text and title.
    photo_pair = [item(job, test_site, "/img/photo.jpg"), item(job, test_site, "/img/photo-copy.jpg")]
    first, copy = sorted(photo_pair, key=lambda i: i.outcome != Outcome.IMPORTED)
    assert (first.outcome, copy.outcome) == (Outcome.IMPORTED, Outcome.DUPLICATE)
    assert copy.image_id == first.image_id and copy.outcome_text == f"duplicate of image {first.image_id}"
    photo = Image.objects.get(pk=item(job, test_site, "/img/photo.jpg").image_id)
    with default_storage.open(photo.file.name, "rb") as fh:
        assert fh.read() == test_site.bodies["/img/photo.jpg"]
    assert photo.sha256 == test_site.sha256("/img/photo.jpg") and photo.format == "JPEG"
    assert photo.source_url == test_site.url("/img/photo.jpg")
    assert photo.source_page_url == test_site.url("/")
    assert photo.source_detail["scrape_job"] == job.pk
    if first.url.endswith("/photo.jpg"):
        assert (photo.title, first.alt, first.title) == ("Photo title", "A photo", "Photo title")
        assert photo.description == "A photo"

    chained = item(job, test_site, "/img/chain.jpg")
    assert chained.outcome == Outcome.IMPORTED and chained.final_url == test_site.url("/img/final.png")
    chained_image = chained.image
    assert chained_image.format == "PNG" and chained_image.original_filename == "final.png"
    assert chained_image.sha256 == hashlib.sha256(test_site.bodies["/img/final.png"]).hexdigest()

    for path, fmt in (("/img/a1.webp", "WEBP"), ("/img/anim.gif", "GIF"), ("/img/s-large.jpg", "JPEG"),
                      ("/img/b1.png", "PNG"), ("/img/linked.png", "PNG")):
        row = item(job, test_site, path)
        assert row.outcome == Outcome.IMPORTED and row.image.format == fmt, row
        with default_storage.open(row.image.file.name, "rb") as fh:
            assert fh.read() == test_site.bodies[path]

    bmp = item(job, test_site, "/img/c1.bmp")
    assert bmp.outcome == Outcome.TOO_SMALL and "40×40" in bmp.reason and bmp.image is None
    assert item(job, test_site, "/img/deep.tiff").outcome == Outcome.TOO_SMALL
    small = item(job, test_site, "/img/small.png")
    assert small.outcome == Outcome.TOO_SMALL and "below the minimum of 1000" in small.reason
    missing = item(job, test_site, "/img/missing.jpg")
    assert (missing.outcome, missing.bucket, missing.http_status) == (Outcome.FAILED, "http_404", 404)
    refused = item(job, test_site, "/img/to-metadata")
    assert refused.bucket == "refused_unsafe" and "169.254.169.254" in refused.reason
    assert item(job, test_site, "/img/broken.jpg").bucket == "invalid_image"
    assert item(job, test_site, "/img/slow.jpg").bucket == "timeout"

    # The log stays, the crawl's temporary files do not.
    assert "Crawl ended: finished" in job.log_tail
    assert job.log_key == f"scrapes/{job.pk}/log.txt"
    with artifact_storage().open(job.log_key) as fh:
        assert b"Spider closed (finished)" in fh.read()
    assert work_dirs(settings) == []

    # The image page's lineage names the job.
    rows = [row for hook in lineage_hooks for row in hook(photo)]
    assert {"label": "Scrape job", "text": f"#{job.pk} of 127.0.0.1", "url": job.get_absolute_url()} in rows

    again = scrape_job_rerun(job=job, user=user)
    assert again.rerun_of == job and again.album == album and again.min_width == 50
    run_worker("scrape")
    again.refresh_from_db()
    assert again.status == JobStatus.SUCCEEDED, again.error
    assert without_hosts(again.counters) == {**MAIN_COUNTERS, "imported": 0, "duplicates": 8}
    assert outcomes(again) == {"duplicate": 8, "too_small": 3, "failed": 12}
    assert Image.objects.filter(owner=user).count() == 7 and album.ordered_images().count() == 7
    dup = ScrapedItem.objects.get(job=again, url=test_site.url("/img/chain.jpg"))
    assert dup.image_id == chained.image_id and dup.reason == "already in the gallery"
    assert work_dirs(settings) == []


def test_alt_text_and_titles_go_to_the_label_hooks(user, test_site, run_worker, label_hook):
    seen = []
    label_hook(lambda *, image, alt, title: seen.append((image.pk, alt, title)))
    job = start(user, test_site, "/gallery/b.html", depth=0)
    run_worker("scrape")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.counters["imported"] == 3
    by_image = {ScrapedItem.objects.get(job=job, image_id=pk).url.rsplit("/", 1)[1]: (alt, title)
                for pk, alt, title in seen}
    assert by_image == {"b1.png": ("B one", ""), "anim.gif": ("Animated", ""), "photo-copy.jpg": ("Copy", "")}


def test_progress_reaches_the_row_while_the_crawl_runs(user, test_site, run_worker, label_hook):
    snapshots = []

    def snapshot(*, image, alt, title):
        row = ScrapeJob.objects.get(pk=job.pk)
        snapshots.append((row.status, row.stage, dict(row.counters), row.progress))

    label_hook(snapshot)
    job = start(user, test_site, delay=0.1)
    run_worker("scrape")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert snapshots and all(s[0] == JobStatus.RUNNING for s in snapshots)
    assert any(s[1] == Stage.CRAWLING and s[2]["pages"] >= 1 and 0 < s[3] < 1 for s in snapshots), snapshots
    # Rows were written while the crawl went on, not only at the end.
    assert any(s[2]["discovered"] > 0 for s in snapshots)


def test_cancel_stops_the_crawl_within_seconds_and_keeps_what_was_imported(
    user, test_site, run_worker, label_hook, settings
):
    cancelled_at = []

    def cancel_after_first_import(*, image, alt, title):
        if not cancelled_at:
            cancelled_at.append(time.monotonic())
            job_cancel(ScrapeJob.objects.get(pk=job.pk))

    label_hook(cancel_after_first_import)
    job = start(user, test_site, delay=0.5, concurrency=1)
    run_worker("scrape")
    ended = time.monotonic()
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.stage == Stage.DONE
    assert cancelled_at and ended - cancelled_at[0] < 6
    assert job.crawl_reason == "cancelled"
    imported = job.counters["imported"]
    assert 1 <= imported < 7
    assert Image.objects.filter(owner=user).count() == imported  # kept
    assert job.album.ordered_images().count() == imported
    # Every discovered URL got an outcome; nothing is left half-way.
    assert ScrapedItem.objects.filter(job=job).count() == job.counters["discovered"]
    assert not ScrapedItem.objects.filter(job=job, outcome__in=[Outcome.PENDING, Outcome.DOWNLOADED]).exists()
    c = job.counters
    assert c["discovered"] == c["imported"] + c["duplicates"] + c["too_small"] + c["failed"] + c["skipped"]
    assert ScrapedItem.objects.filter(job=job, outcome=Outcome.SKIPPED, reason__contains="cancelled").exists()
    assert work_dirs(settings) == []


def test_without_the_allow_setting_even_loopback_is_refused_by_the_job(user, fresh_site, run_worker, settings):
    job = scrape_job_start(user=user, start_url=fresh_site.url("/"), **JOB_OPTIONS)
    settings.SCRAPE_ALLOW_PRIVATE = False
    run_worker("scrape")
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.crawl_reason == "refused" and job.was_refused
    assert "refused" in job.error and "loopback address 127.0.0.1" in job.error
    assert ScrapedItem.objects.filter(job=job).count() == 0
    assert not Album.objects.filter(owner=user).exists()  # nothing half-made
    assert fresh_site.requested_paths() == []  # not even robots.txt
    assert work_dirs(settings) == []


def test_a_host_that_resolves_to_a_private_address_by_the_time_the_job_runs_is_refused(
    user, fresh_site, run_worker, settings
):
    settings.SCRAPE_TEST_HOST_OVERRIDES = {"site.test": "127.0.0.1"}
    job = scrape_job_start(user=user, start_url=f"http://site.test:{fresh_site.port}/", **JOB_OPTIONS)
    settings.SCRAPE_TEST_HOST_OVERRIDES = {"site.test": "169.254.169.254"}  # DNS changed since the form
    run_worker("scrape")
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.crawl_reason == "refused"
    assert "resolves to a link-local address 169.254.169.254" in job.error
    assert fresh_site.requested_paths() == [] and work_dirs(settings) == []


def test_a_start_page_that_cannot_be_fetched_fails_the_job(user, test_site, run_worker):
    job = start(user, test_site, "/gallery/missing.html")
    run_worker("scrape")
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error == "The start page could not be fetched: HTTP 404"
    assert job.counters["pages_failed"] == 1 and job.error_buckets == {"http_404": 1}


def test_files_the_gallery_refuses_are_failed_items_with_the_reason(user, test_site, run_worker):
    job = start(user, test_site, "/qa/polyglot.html", depth=0)
    run_worker("scrape")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    row = item(job, test_site, "/qa/polyglot.png")
    assert row.outcome == Outcome.FAILED and row.bucket == "rejected"
    assert "embedded HTML or script" in row.reason and row.image is None
    assert job.counters["failed"] == 1 and job.error_buckets == {"rejected": 1}
    assert Image.objects.count() == 1  # the page's other image
