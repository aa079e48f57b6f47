"""RQ worker classes that also reap stale job rows as part of their maintenance.

`Worker` forks per job (CPU queues). `WarmWorker` runs jobs in its own process
so that a loaded diffusion pipeline stays in memory between `train`/`generate`
jobs; it closes stale database connections around every job instead.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import close_old_connections
from rq.worker import SimpleWorker
from rq.worker import Worker as ForkWorker

logger = logging.getLogger(__name__)


class _ReapingMixin:
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("maintenance_interval", settings.JOB_REAP_INTERVAL)
        super().__init__(*args, **kwargs)

    def run_maintenance_tasks(self):
        super().run_maintenance_tasks()
        from .jobs import reap_stale_jobs

        try:
            counts = reap_stale_jobs()
            if any(counts.values()):
                logger.info("reaped stale jobs: %s", counts)
        except Exception:
            logger.exception("reaping stale jobs failed")
        finally:
            close_old_connections()


class Worker(_ReapingMixin, ForkWorker):
    pass


class WarmWorker(_ReapingMixin, SimpleWorker):
    def perform_job(self, job, queue, *args, **kwargs):
        close_old_connections()
        try:
            return super().perform_job(job, queue, *args, **kwargs)
        finally:
            close_old_connections()
