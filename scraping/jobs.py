"""RQ entry point for scraping (queue `scrape`): one crawl in a fresh subprocess, its images imported as it goes."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings

from imagineer.artifacts import PeriodicUpload
from imagineer.jobs import JobCancelled, JobContext, JobError, run_job

from .models import ScrapeJob, Stage
from .services import CrawlRecorder, check_start_url, host_overrides_for_tests
from .urlsafety import UnresolvableHost, UnsafeURL

logger = logging.getLogger(__name__)


def work_root() -> Path:
    return Path(settings.WORK_DIR) / "scrapes"


def log_key(job: ScrapeJob) -> str:
    """Where the crawl log lives in the artifacts storage, for the web and any other machine to read."""
    return f"scrapes/{job.pk}/log.txt"


def crawl_config(job: ScrapeJob, work_dir: Path) -> dict[str, Any]:
    config: dict[str, Any] = {
        "start_url": job.start_url,
        "work_dir": str(work_dir),
        "allowed_domains": list(job.allowed_domains or []),
        "max_pages": job.max_pages,
        "max_images": job.max_images,
        "depth": job.depth,
        "min_bytes": job.min_bytes,
        "obey_robots": job.obey_robots,
        "delay": job.delay,
        "autothrottle": job.autothrottle,
        "concurrency": job.concurrency,
        "download_timeout": job.download_timeout,
        "optout_policy": job.optout_policy,
    }
    overrides = host_overrides_for_tests()
    if overrides is not None:
        config["host_overrides"] = overrides
    return config


def _crawl_failure(outcome) -> str:
    if outcome.reason == "timeout":
        return f"The crawl ran too long and was stopped: {outcome.error}"
    tail = outcome.stderr_tail.splitlines()
    detail = outcome.error or (tail[-1] if tail else "no detail")
    return f"The crawl failed ({outcome.reason}): {detail}"


def scrape_body(ctx: JobContext) -> None:
    from .crawl_runner import ConfigError, run_crawl

    job: ScrapeJob = ctx.job
    ctx.update(stage=Stage.CRAWLING, message="Checking the start URL…")
    # The form checked it too, but addresses change: check again, just before the crawl.
    try:
        check_start_url(job.start_url)
    except UnsafeURL as exc:
        reason = "dns" if isinstance(exc, UnresolvableHost) else "refused"
        ctx.update(stage=Stage.DONE, crawl_reason=reason, message="Refused.", check_cancel=False)
        raise JobError(f"The start URL was refused: {exc}.") from None

    root = work_root()
    root.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f"job-{job.pk}-", dir=root))
    # The log is written on this machine, inside the work dir, and uploaded as it grows: the web may be
    # another machine. The row gets the key once the first upload is stored.
    log_file = work_dir / "crawl.log"
    log_upload = PeriodicUpload(log_file, log_key(job), every=settings.ARTIFACT_LOG_UPLOAD_SECONDS,
                                on_uploaded=lambda key: ctx.update(log_key=key, check_cancel=False))
    recorder = CrawlRecorder(
        job,
        save=lambda **fields: ctx.update(check_cancel=False, **fields),
        cancel_requested=ctx.cancel_requested,
    )

    def should_stop() -> bool:  # polled a few times a second while the crawl runs
        log_upload.tick()
        return recorder.should_stop()

    try:
        try:
            outcome = run_crawl(crawl_config(job, work_dir), on_event=recorder.on_event,
                                should_stop=should_stop, log_path=log_file)
        except ConfigError as exc:
            raise JobError(f"The crawl settings are invalid: {exc}") from exc
        finished = {"crawl_reason": outcome.reason[:40], "limits_hit": list(outcome.limits_hit),
                    "crawl_stats": outcome.stats}
        # Only the user's cancel counts as one: the runner also stops a crawl whose callbacks failed.
        if not recorder.stopping:
            recorder.import_remaining()
        recorder.stage = Stage.DONE
        if recorder.stopping:
            recorder.skip_pending("the scrape was cancelled before it was imported")
            recorder.flush(force=True, **finished)
            raise JobCancelled()
        recorder.flush(force=True, **finished)
        if not outcome.ok:
            raise JobError(_crawl_failure(outcome))
        if recorder.counters["pages"] == 0 and recorder.start_failure:
            raise JobError(f"The start page could not be fetched: {recorder.start_failure}")
        job.refresh_from_db()
        ctx.update(message=job.summary(), check_cancel=False)
    finally:
        if recorder.stage != Stage.DONE:
            recorder.stage = Stage.DONE
            try:
                recorder.flush(force=True)
            except Exception:  # noqa: BLE001, S110 - the job is ending with another error already
                pass
        _upload_final_log(ctx, log_upload)
        # Whatever happened, the crawl's copies go: what was imported lives in the gallery now.
        shutil.rmtree(work_dir, ignore_errors=True)


def _upload_final_log(ctx: JobContext, log_upload: PeriodicUpload) -> None:
    """The complete log, stderr included, once the crawler has exited. A failed upload costs the log, not the job."""
    if ctx.lost.is_set() or not ctx.own_row().exists():
        return  # deleted, or another worker has the row: do not write (back) a log nobody will delete
    try:
        log_upload.final()
    except Exception:  # noqa: BLE001 - the job's outcome stands without its log
        logger.warning("could not upload the log of scrape %s", ctx.job.pk, exc_info=True)


def run_scrape_job(job_id: int):
    return run_job(ScrapeJob, job_id, scrape_body)
