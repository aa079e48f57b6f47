"""`manage.py scrape`: inline, through a worker, refusals and failures with a non-zero exit."""

from __future__ import annotations

import io
import threading
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from gallery import services as gallery_services
from gallery.models import Album, Image
from imagineer.models import JobStatus
from scraping.models import ScrapeJob

pytestmark = pytest.mark.usefixtures("scrape_settings", "no_real_dns")


def scrape(*args: str) -> str:
    out = io.StringIO()
    call_command("scrape", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.slow
def test_it_scrapes_inline_into_a_named_album_and_ends_with_the_counters(user, test_site, transactional_db):
    out = scrape(test_site.url("/gallery/b.html"), "--owner", "alice", "--album", "Birds", "--depth", "0",
                 "--max-pages", "5", "--inline")
    job = ScrapeJob.objects.get()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert (job.depth, job.max_pages, job.album_name) == (0, 5, "Birds")
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"Scrape job {job.pk}: {test_site.url('/gallery/b.html')}")
    assert lines[-1] == ("1 page(s) crawled, 0 failed; 3 image(s) found: 3 downloaded, 3 imported, "
                         "0 duplicate(s), 0 too small, 0 failed, 0 skipped, 0 opted out")
    assert Album.objects.get(owner=user, name="Birds").ordered_images().count() == 3


@pytest.mark.slow
def test_max_images_limits_the_import_and_an_existing_album_is_used(user, test_site, transactional_db):
    album = gallery_services.album_create(owner=user, name="Existing")
    out = scrape(test_site.url("/gallery/b.html"), "--album", "Existing", "--depth", "0", "--max-images", "1",
                 "--inline")  # the only user is the owner
    job = ScrapeJob.objects.get()
    assert job.album == album and job.owner == user and job.max_images == 1
    assert job.counters["downloaded"] == 1 and job.counters["imported"] == 1
    assert job.crawl_reason == "max_images" and "max_images" in job.limits_hit
    assert album.ordered_images().count() == 1
    assert "1 imported" in out.strip().splitlines()[-1]


@pytest.mark.slow
def test_wait_runs_the_job_through_a_worker(user, test_site, run_worker):
    out = io.StringIO()
    errors = []

    def command():
        try:
            call_command("scrape", test_site.url("/gallery/c.html"), "--owner", "alice", "--depth", "0", "--wait",
                         "--no-progress", stdout=out, stderr=io.StringIO())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()  # this thread's own connection

    # The command waits in a thread; the worker needs the main thread (it installs signal handlers).
    thread = threading.Thread(target=command)
    thread.start()
    deadline = time.monotonic() + 30
    while not ScrapeJob.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    run_worker("scrape")
    thread.join(timeout=60)
    assert not thread.is_alive() and not errors, errors
    assert out.getvalue().strip().splitlines()[-1].startswith("1 page(s) crawled, 0 failed; 1 image(s) found")


def test_a_refused_url_exits_non_zero_and_creates_nothing(user, settings):
    settings.SCRAPE_ALLOW_PRIVATE = False
    with pytest.raises(CommandError, match="loopback address 127.0.0.1"):
        scrape("http://127.0.0.1:9/", "--owner", "alice", "--inline")
    with pytest.raises(CommandError, match="private address 10.0.0.1"):
        scrape("http://10.0.0.1/", "--owner", "alice", "--inline")
    with pytest.raises(CommandError, match="scheme 'file' is not allowed"):
        scrape("file:///etc/passwd", "--owner", "alice")
    assert ScrapeJob.objects.count() == 0


@pytest.mark.slow
def test_a_failed_job_exits_non_zero_after_the_counters(user, test_site, transactional_db):
    out = io.StringIO()
    with pytest.raises(CommandError, match="failed: The start page could not be fetched: HTTP 404"):
        call_command("scrape", test_site.url("/nothing-here"), "--owner", "alice", "--inline", stdout=out,
                     stderr=io.StringIO())
    assert out.getvalue().strip().splitlines()[-1].startswith("0 page(s) crawled, 1 failed")
    assert ScrapeJob.objects.get().status == JobStatus.FAILED
    assert Image.objects.count() == 0


def test_the_owner_must_be_clear(make_user, db):
    with pytest.raises(CommandError, match="--owner"):
        scrape("http://127.0.0.1:9/")  # nobody at all
    make_user("one")
    make_user("two")
    with pytest.raises(CommandError, match="--owner"):
        scrape("http://127.0.0.1:9/")
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        scrape("http://127.0.0.1:9/", "--owner", "nobody")
    assert ScrapeJob.objects.count() == 0


def test_without_a_run_mode_the_job_is_only_queued(user, redis_conn, transactional_db):
    out = scrape("http://127.0.0.1:9/", "--owner", "alice")
    job = ScrapeJob.objects.get()
    assert job.status == JobStatus.QUEUED and "Queued" in out
    assert job.album_name == "127.0.0.1"
