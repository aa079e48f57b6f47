"""Django's Redis cache, falling back to a per-process memory cache while Redis cannot be reached.

The cache holds allauth's login rate limits and other short-lived values that every web process and machine
must share, so it lives in Redis. A Redis outage must not turn every login into a server error: while Redis
is down each operation is served by a local-memory cache (limits then hold per process only) and a warning
is logged, at most once a minute; the next operation after Redis returns uses Redis again.
"""

from __future__ import annotations

import logging
import time

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache

logger = logging.getLogger(__name__)

_WARN_EVERY = 60.0


class FallbackRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._fallback = LocMemCache(f"fallback-{id(self)}", {"TIMEOUT": params.get("TIMEOUT", 300)})
        self._last_warning = 0.0

    def _degraded(self, operation: str, exc: Exception) -> LocMemCache:
        now = time.monotonic()
        if now - self._last_warning > _WARN_EVERY:
            self._last_warning = now
            logger.warning(
                "Redis cache unreachable (%s: %s); using a per-process memory cache until it is back, so "
                "login rate limits hold per process only.", operation, exc,
            )
        return self._fallback


def _with_fallback(name: str):
    def method(self, *args, **kwargs):
        import redis

        try:
            return getattr(RedisCache, name)(self, *args, **kwargs)
        except (redis.RedisError, OSError) as exc:
            return getattr(self._degraded(name, exc), name)(*args, **kwargs)

    method.__name__ = name
    return method


for _name in ("add", "get", "set", "touch", "delete", "get_many", "has_key", "incr", "set_many",
              "delete_many", "clear"):
    setattr(FallbackRedisCache, _name, _with_fallback(_name))
