"""The crawl's output: one JSON object per line on stdout, one line per event (pure Python).

Every event has ``"event"`` (its type) and ``"t"`` (seconds since the crawl process started). Types:

``started``           ``pid``, ``start_url``, ``config`` (the validated configuration)
``page``              a page was fetched: ``url`` (final, after redirects), ``requested_url``, ``status``,
                      ``depth``, ``content_type``, ``html`` (parsed for links), ``links`` (new page links
                      queued), ``images`` (new images discovered on it), ``redirect_urls``, ``optout``
                      (the page's opt-out signals)
``page_failed``       ``url``, ``depth``, ``bucket``, ``reason``, ``status`` (HTTP status or null)
``image_discovered``  ``url``, ``page_url``, ``alt``, ``title``, ``source`` ("img", "srcset" or "link");
                      once per distinct URL; each is followed by exactly one outcome event below
``image_downloaded``  ``url``, ``final_url``, ``page_url``, ``alt``, ``title``, ``path`` (absolute path of the
                      saved file, original bytes), ``bytes``, ``sha256``, ``content_type`` (as served),
                      ``format`` (as decoded: JPEG, PNG, WEBP, GIF, BMP, TIFF), ``width``, ``height``,
                      ``fetched_at`` (ISO time, UTC), ``optout`` (the opt-out signals found, see
                      ``optout``; only non-empty when the policy is "ignore"), ``licence`` (licence hints
                      of the page: ``{"kind", "value", "page_url"}``)
``image_failed``      ``url``, ``page_url``, ``alt``, ``title``, ``bucket``, ``reason``, ``status``
``image_skipped``     ``url``, ``page_url``, ``alt``, ``title``, ``reason``: "too_small" (with ``bytes``,
                      ``min_bytes``), "duplicate" (same bytes as ``duplicate_of``, with ``sha256``, ``path``
                      of the file already saved, ``bytes``), "max_images", "not_fetched" (the crawl ended
                      first), "cancelled" or "opted_out" (with ``optout``: the signals, each
                      ``{"signal", "value", "where", "url"}``)
``log``               ``level``, ``logger``, ``message`` (warnings and errors, and the crawler's own info)
``done``              last line: ``reason`` ("finished", "max_images", "cancelled", "closespider_timeout",
                      "closespider_pagecount", "error"), ``limits_hit`` (of "max_pages", "depth",
                      "max_images"), ``stats`` (see ``spider.ImageSpider.summary``), ``error`` (null or text)

Failure buckets: ``http_<status>``, ``refused_unsafe``, ``dns``, ``timeout``, ``connection_refused``,
``connection_error``, ``too_large``, ``data_loss``, ``robots``, ``offsite``, ``redirect_limit``,
``invalid_image``, ``too_many_pixels``, ``ignored``, ``error``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, TextIO

_T0 = time.monotonic()

# The crawler's own loggers, whose INFO lines also become events.
OWN_LOGGER = "scraping"


class Emitter:
    """Writes events; thread-safe; a closed pipe (the parent went away) turns into ``broken``."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.broken = False
        self.on_broken: Any = None

    def emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "t": round(time.monotonic() - _T0, 3), **fields}
        line = json.dumps(record, default=str, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            if self.broken:
                return
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (BrokenPipeError, OSError, ValueError):
                self.broken = True
        if self.broken and self.on_broken is not None:
            self.on_broken()


class EventLogHandler(logging.Handler):
    """Turns log records into ``log`` events: WARNING and up from anyone, INFO and up from our loggers."""

    def __init__(self, emitter: Emitter) -> None:
        super().__init__(level=logging.INFO)
        self.emitter = emitter
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING and not record.name.startswith(OWN_LOGGER):
            return
        if getattr(self._local, "busy", False):  # a log call made while emitting: drop, never recurse
            return
        self._local.busy = True
        try:
            message = record.getMessage()
            if record.exc_info and record.levelno >= logging.ERROR:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            self.emitter.emit("log", level=record.levelname, logger=record.name, message=message[:4000])
        except Exception:  # noqa: S110 - logging must never break the crawl, nor log about itself
            pass
        finally:
            self._local.busy = False
