"""The crawl recorder on its own (events in, rows out, no crawl), and the clean-up around scrape jobs."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gallery.models import Image
from imagineer.jobs import reap_stale_jobs
from imagineer.models import JobStatus
from imagineer.testing import image_bytes
from scraping.models import Outcome, ScrapedItem, ScrapeJob, Stage
from scraping.services import CrawlRecorder, scraped_filename

pytestmark = pytest.mark.usefixtures("media_root", "no_real_dns")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def job(user):
    return ScrapeJob.objects.create(owner=user, start_url="https://example.com/", album_name="Example",
                                    status=JobStatus.RUNNING, stage=Stage.CRAWLING, min_width=32, min_height=32)


@pytest.fixture
def recorder(job):
    saves: list[dict] = []

    def save(**fields):
        saves.append(fields)
        ScrapeJob.objects.filter(pk=job.pk).update(**fields)

    rec = CrawlRecorder(job, save=save, cancel_requested=lambda: False, clock=Clock())
    rec.saves = saves
    return rec


def discovered(n: int, page: str = "https://example.com/") -> dict:
    return {"event": "image_discovered", "url": f"https://example.com/{n}.png", "page_url": page,
            "alt": f"alt {n}", "title": "", "source": "img"}


def downloaded(n: int, path: Path, size=(64, 48), fmt="PNG") -> dict:
    data = path.read_bytes()
    return {"event": "image_downloaded", "url": f"https://example.com/{n}.png", "final_url": f"https://cdn.example.com/{n}",
            "page_url": "https://example.com/", "alt": f"alt {n}", "title": "", "path": str(path), "bytes": len(data),
            "sha256": "x" * 64, "content_type": "image/png", "format": fmt, "width": size[0], "height": size[1]}


def test_rows_and_figures_are_written_in_batches_not_per_event(recorder, job, django_assert_max_num_queries):
    recorder.flush(force=True)
    with django_assert_max_num_queries(0):
        for n in range(200):
            recorder.on_event(discovered(n))
            recorder.on_event({"event": "image_failed", "url": f"https://example.com/{n}.png", "bucket": "http_404",
                               "reason": "HTTP 404", "status": 404})
        assert recorder.should_stop() is False  # the cancel poll waits for its interval too
    assert ScrapedItem.objects.filter(job=job).count() == 0
    recorder.clock.now += 1.5
    with django_assert_max_num_queries(6):
        recorder.on_event({"event": "page", "url": "https://example.com/"})
    job.refresh_from_db()
    assert ScrapedItem.objects.filter(job=job, outcome=Outcome.FAILED, http_status=404).count() == 200
    assert job.counters["discovered"] == 200 and job.counters["failed"] == 200 and job.counters["pages"] == 1
    assert job.error_buckets == {"http_404": 200}
    assert len(recorder.saves) == 2
    recorder.clock.now += 5  # idle: nothing new, nothing written
    with django_assert_max_num_queries(1):  # the cancel poll only
        assert recorder.should_stop() is False
    assert len(recorder.saves) == 2


def test_a_duplicate_inside_one_crawl_follows_the_first_copy(recorder, job, tmp_path):
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    big.write_bytes(image_bytes("PNG", size=(64, 48), seed=1))
    small.write_bytes(image_bytes("PNG", size=(16, 16), seed=2))
    for n in range(4):
        recorder.on_event(discovered(n))
    recorder.on_event(downloaded(0, big))
    recorder.on_event(downloaded(1, small, size=(16, 16)))
    recorder.on_event({"event": "image_skipped", "reason": "duplicate", "url": "https://example.com/2.png",
                       "duplicate_of": "https://example.com/0.png", "bytes": 10, "sha256": "y" * 64})
    recorder.on_event({"event": "image_skipped", "reason": "duplicate", "url": "https://example.com/3.png",
                       "duplicate_of": "https://example.com/1.png", "bytes": 10, "sha256": "z" * 64})
    recorder.import_remaining()
    recorder.flush(force=True)
    rows = {row.url.rsplit("/", 1)[1]: row for row in ScrapedItem.objects.filter(job=job)}
    assert rows["0.png"].outcome == Outcome.IMPORTED
    assert (rows["2.png"].outcome, rows["2.png"].image_id) == (Outcome.DUPLICATE, rows["0.png"].image_id)
    assert rows["1.png"].outcome == Outcome.TOO_SMALL
    assert "16×16 pixels, below the minimum of 32×32" in rows["1.png"].reason
    assert rows["3.png"].outcome == Outcome.TOO_SMALL and rows["3.png"].reason.startswith("the same file as")
    image = Image.objects.get()
    assert image.source_url == "https://cdn.example.com/0" and image.title == "alt 0"
    assert image.original_filename == "0.png" and image.derivatives == "ready"
    assert list(job.album.ordered_images()) == [image]
    # The crawl's copies go once imported (or judged).
    assert not big.exists() and not small.exists()
    job.refresh_from_db()
    assert job.counters["imported"] == 1 and job.counters["duplicates"] == 1 and job.counters["too_small"] == 2


def test_outcomes_are_counted_per_image_host_for_the_history(recorder, job, tmp_path):
    from scraping.selectors import history_stats

    path = tmp_path / "a.png"
    path.write_bytes(image_bytes("PNG", size=(64, 48), seed=4))
    for n in range(4):
        recorder.on_event(discovered(n))
    recorder.on_event(downloaded(0, path))  # fetched from cdn.example.com after a redirect
    recorder.on_event({"event": "image_skipped", "reason": "duplicate", "url": "https://example.com/1.png",
                       "duplicate_of": "https://example.com/0.png", "bytes": 10, "sha256": "y" * 64})
    recorder.on_event({"event": "image_failed", "url": "https://example.com/2.png", "bucket": "http_404",
                       "reason": "HTTP 404", "status": 404})
    recorder.on_event({"event": "image_skipped", "reason": "opted_out", "url": "https://example.com/3.png",
                       "optout": [{"signal": "x-robots-tag", "value": "noai", "where": "image"}]})
    recorder.import_remaining()
    recorder.flush(force=True)

    job.refresh_from_db()
    assert job.counters["hosts"] == {
        "cdn.example.com": {"imported": 1, "duplicates": 0, "failed": 0, "opted_out": 0},
        "example.com": {"imported": 0, "duplicates": 1, "failed": 1, "opted_out": 1},
    }
    # A job picked up again (a worker died) goes on counting from what was stored.
    again = CrawlRecorder(job, save=lambda **fields: None, cancel_requested=lambda: False, clock=Clock())
    assert again.hosts == job.counters["hosts"]
    ScrapeJob.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED, started_at=datetime.now(UTC),
                                               finished_at=datetime.now(UTC))
    rows = {r["domain"]: r for r in history_stats(job.owner)["domains"]}
    assert rows["cdn.example.com"]["imported"] == 1 and rows["example.com"]["opted_out"] == 1
    assert rows["example.com"]["jobs"] == rows["cdn.example.com"]["jobs"] == 1


def test_a_row_written_before_its_download_gets_every_field_of_its_outcome(recorder, job, tmp_path):
    path = tmp_path / "a.png"
    size = path.write_bytes(image_bytes("PNG", size=(64, 48), seed=3))
    recorder.on_event(discovered(1))
    recorder.flush(force=True)
    assert ScrapedItem.objects.get(job=job).outcome == Outcome.PENDING  # the row exists: later changes are updates
    signals = [{"signal": "x-robots-tag", "value": "noai", "where": "image", "url": "https://example.com/1.png"}]
    licence = [{"kind": "a-rel-license", "value": "https://creativecommons.org/licenses/by/4.0/",
                "page_url": "https://example.com/"}]
    recorder.on_event({**downloaded(1, path), "optout": signals, "licence": licence,
                       "fetched_at": "2026-11-30T10:00:00+00:00"})
    recorder.import_remaining()
    recorder.flush(force=True)
    row = ScrapedItem.objects.get(job=job)
    image = Image.objects.get()
    assert (row.outcome, row.reason, row.image_id) == (Outcome.IMPORTED, "", image.pk)
    assert (row.final_url, row.sha256, row.bytes) == ("https://cdn.example.com/1", "x" * 64, size)
    assert (row.width, row.height, row.format, row.content_type) == (64, 48, "PNG", "image/png")
    assert row.optout == signals and row.licence_hints == licence
    assert row.fetched_at == datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    assert row.http_status is None and row.bucket == ""


def test_a_file_that_vanished_is_a_failed_item_not_a_crash(recorder, job, tmp_path):
    path = tmp_path / "gone.png"
    path.write_bytes(image_bytes("PNG", size=(64, 48)))
    recorder.on_event(discovered(0))
    event = downloaded(0, path)
    path.unlink()
    recorder.on_event(event)
    recorder.flush(force=True)
    row = ScrapedItem.objects.get(job=job)
    assert row.outcome == Outcome.FAILED and "could not be read" in row.reason
    assert Image.objects.count() == 0


@pytest.mark.parametrize(
    ("url", "fmt", "name"),
    [
        ("https://x.org/a/photo.jpg", "JPEG", "photo.jpg"),
        ("https://x.org/img/chain.jpg", "PNG", "chain.png"),  # named .jpg, served a PNG
        ("https://x.org/latest/meta-data/", "GIF", "meta-data.gif"),
        ("https://x.org/", "WEBP", "image.webp"),
        ("https://x.org/p/%2e%2e%2fetc%2fpasswd", "PNG", "passwd.png"),
        ("https://x.org/get?id=5", "BMP", "get.bmp"),
    ],
)
def test_file_names_come_from_the_url_with_the_real_format(url, fmt, name):
    assert scraped_filename(url, fmt) == name


def test_invalid_crawl_settings_fail_the_job_and_leave_no_files(user, settings, tmp_path, run_worker,
                                                                artifacts_root):
    from scraping.services import scrape_job_start

    settings.SCRAPE_ALLOW_PRIVATE = True
    settings.WORK_DIR = tmp_path / "work"
    job = scrape_job_start(user=user, start_url="http://127.0.0.1:9/")
    ScrapeJob.objects.filter(pk=job.pk).update(download_timeout=0.0)  # below what the crawler accepts
    run_worker("scrape")
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "crawl settings are invalid" in job.error
    assert "download_timeout" in job.error and job.stage == Stage.DONE
    assert list((tmp_path / "work" / "scrapes").iterdir()) == [] and job.log_key == ""
    assert not artifacts_root.exists()


def test_the_reaper_removes_work_dirs_of_jobs_that_are_not_running(user, settings, tmp_path, db):
    settings.WORK_DIR = tmp_path
    running = ScrapeJob.objects.create(owner=user, start_url="https://example.com/", album_name="x",
                                       status=JobStatus.RUNNING, heartbeat_at=None)
    ScrapeJob.objects.filter(pk=running.pk).update(started_at=None)
    root = tmp_path / "scrapes"
    old = time.time() - 3600
    dirs = {name: root / name for name in (f"job-{running.pk}-a", "job-99999-b", "job-99998-new", "other")}
    for path in dirs.values():
        (path / "images").mkdir(parents=True)
        (path / "images" / "1.png").write_bytes(b"x")
    for name in (f"job-{running.pk}-a", "job-99999-b", "other"):
        os.utime(dirs[name], (old, old))
    reap_stale_jobs()
    assert sorted(p.name for p in root.iterdir()) == sorted([f"job-{running.pk}-a", "job-99998-new", "other"])


def test_deleting_a_job_deletes_its_log_once_the_delete_commits(user, artifacts_root,
                                                               django_capture_on_commit_callbacks):
    from imagineer.artifacts import artifact_exists, artifact_save

    job = ScrapeJob.objects.create(owner=user, start_url="https://example.com/", album_name="x")
    job.log_key = artifact_save(f"scrapes/{job.pk}/log.txt", b"log")
    job.save(update_fields=["log_key"])
    unrecorded = ScrapeJob.objects.create(owner=user, start_url="https://example.com/", album_name="y")
    artifact_save(f"scrapes/{unrecorded.pk}/log.txt", b"uploaded as the row was deleted")
    keys = [f"scrapes/{job.pk}/log.txt", f"scrapes/{unrecorded.pk}/log.txt"]
    with django_capture_on_commit_callbacks(execute=True):
        job.delete()
        unrecorded.delete()
        assert all(artifact_exists(key) for key in keys)  # until the commit: a rolled-back delete keeps them
    assert not any(artifact_exists(key) for key in keys)
    assert list((artifacts_root / "scrapes").rglob("*.txt")) == []
