from __future__ import annotations

import logging
import re
import shutil
import time

from django.apps import AppConfig

logger = logging.getLogger(__name__)

# Work dirs older than this whose job is not running are removed by the reaper.
ORPHAN_WORK_DIR_SECONDS = 600
_WORK_DIR_NAME = re.compile(r"^job-(\d+)-")


class ScrapingConfig(AppConfig):
    name = "scraping"
    verbose_name = "Scraping"

    def ready(self) -> None:
        # Scraped images show their job on the image page, through the gallery's hooks.
        from django.db.models.signals import post_delete

        from gallery import hooks
        from imagineer import jobs

        from .models import ScrapeJob

        hooks.lineage_hooks.append(scrape_lineage)
        jobs.reaper_hooks.append(remove_orphan_work_dirs)
        post_delete.connect(_remove_log, sender=ScrapeJob, dispatch_uid="scraping_remove_log")


def scrape_lineage(image) -> list[dict]:
    """For a scraped image: the scrape job(s) and page(s) it came from."""
    if image.source != "scrape":
        return []
    from .models import ScrapedItem

    rows: list[dict] = []
    seen: set[int] = set()
    items = (ScrapedItem.objects.filter(image=image).select_related("job").order_by("job_id", "seq")[:20])
    for item in items:
        if item.job_id in seen:
            continue
        seen.add(item.job_id)
        rows.append({"label": "Scrape job", "text": f"#{item.job_id} of {item.job.host}",
                     "url": item.job.get_absolute_url()})
        if item.page_url and item.page_url != image.source_page_url:
            rows.append({"label": "Also found on", "text": item.page_url, "url": ""})
        if len(seen) >= 5:
            break
    return rows


def remove_orphan_work_dirs() -> int:
    """Crawl work dirs a killed worker left behind: their job is not running any more."""
    from .jobs import work_root
    from .models import ScrapeJob

    root = work_root()
    if not root.is_dir():
        return 0
    removed = 0
    now = time.time()
    for path in root.iterdir():
        match = _WORK_DIR_NAME.match(path.name)
        if not match or not path.is_dir():
            continue
        status = ScrapeJob.objects.filter(pk=int(match.group(1))).values_list("status", flat=True).first()
        # A finished job's dir goes at once; one without a row only once it is old (it may be brand new).
        if status == "running" or (status is None and now - path.stat().st_mtime < ORPHAN_WORK_DIR_SECONDS):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


def _remove_log(sender, instance, **kwargs) -> None:
    """The job's log goes from the artifacts storage with its row, once the delete is committed."""
    from django.db import transaction

    from imagineer.artifacts import artifact_delete

    from .jobs import log_key

    # The key the worker uploads to, even if the row never recorded it (deleted during its first upload).
    for key in dict.fromkeys(k for k in (instance.log_key, log_key(instance)) if k):
        transaction.on_commit(lambda key=key: artifact_delete(key))
