"""Liveness of the parts the app needs: database, Redis, and how many RQ workers are alive."""

from __future__ import annotations

import logging

from django.db import connection

logger = logging.getLogger(__name__)


def check_health() -> tuple[bool, dict]:
    report: dict = {}
    healthy = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        report["database"] = "ok"
    except Exception as exc:
        logger.warning("health: database down: %s", exc)
        report["database"] = "down"
        healthy = False
    try:
        import redis
        from rq import Worker

        client = redis.Redis.from_url(_redis_url(), socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        report["redis"] = "ok"
        report["workers"] = Worker.count(connection=client)
    except Exception as exc:
        logger.warning("health: redis down: %s", exc)
        report["redis"] = "down"
        report["workers"] = 0
        healthy = False
    return healthy, report


def _redis_url() -> str:
    from django.conf import settings

    return settings.REDIS_URL
