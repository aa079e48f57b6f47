"""The crawl recorder: what the `scrape` job feeds the crawler's events into.

It keeps one `ScrapedItem` per discovered image URL, imports each downloaded image through the gallery's
ingest service, and writes items and counters to the database in batches (at most about once a second),
so a crawl of thousands of images costs a few hundred statements rather than tens of thousands.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from django.db import DatabaseError, IntegrityError, connections, transaction
from django.utils.dateparse import parse_datetime

from gallery.imaging import CANONICAL_EXTENSION, ImageRejected
from gallery.models import Album, ImageSource

from .. import hooks
from ..crawler.optout import describe as describe_optout
from ..models import COUNTER_KEYS, Outcome, ScrapedItem, ScrapeJob, Stage, empty_counters

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 60
FLUSH_SECONDS = 1.0
IMPORT_SLICE_SECONDS = 0.25
CANCEL_POLL_SECONDS = 0.5
ITEM_FIELDS = ("final_url", "outcome", "reason", "bucket", "http_status", "image", "sha256", "bytes", "width",
               "height", "format", "content_type", "optout", "licence_hints", "fetched_at")
SKIP_REASONS = {
    "max_images": "the image limit was reached",
    "not_fetched": "the crawl ended before it was fetched",
    "cancelled": "the scrape was cancelled",
}


def scraped_filename(url: str, fmt: str) -> str:
    """A file name for the gallery from the URL, with the extension of the format actually received."""
    name = PurePosixPath(unquote(urlsplit(url).path)).name
    stem = name.rsplit(".", 1)[0] if "." in name else name
    stem = "".join(c for c in stem if c.isalnum() or c in "-_ ").strip()[:100] or "image"
    return f"{stem}{CANONICAL_EXTENSION.get(fmt, '')}"


def _signals(raw: Any) -> list[dict[str, str]]:
    """The crawl's opt-out signals, kept to their known keys."""
    out = []
    for signal in raw or []:
        if isinstance(signal, dict):
            out.append({k: str(signal.get(k) or "")[:2000] for k in ("signal", "value", "where", "url")})
    return out[:50]


def _update_items(items: list[ScrapedItem]) -> None:
    """Write ITEM_FIELDS of saved items: one parametrised UPDATE by primary key, executed for every item.

    What ``bulk_update(items, ITEM_FIELDS)`` writes, at a fraction of its cost: bulk_update builds a
    CASE WHEN expression per field and item through the ORM (15 fields × thousands of items in a scrape),
    which took more of the job's CPU than the statements themselves.
    """
    meta = ScrapedItem._meta
    connection = connections[ScrapedItem.objects.db]
    quote = connection.ops.quote_name
    fields = [meta.get_field(name) for name in ITEM_FIELDS]
    # Identifiers come from the model's _meta, quoted; every value is a parameter.
    sql = (f"UPDATE {quote(meta.db_table)} SET {', '.join(f'{quote(f.column)} = %s' for f in fields)} "  # noqa: S608
           f"WHERE {quote(meta.pk.column)} = %s")
    rows = [[f.get_db_prep_save(getattr(item, f.attname), connection) for f in fields] + [item.pk] for item in items]
    with transaction.atomic(using=connection.alias, savepoint=False), connection.cursor() as cursor:
        cursor.executemany(sql, rows)



HOST_COUNTERS = ("imported", "duplicates", "failed", "opted_out")
MAX_HOSTS = 200  # a crawl of many sites keeps its first 200 hosts apart and counts the rest together
OTHER_HOSTS = "(other hosts)"


def _restored_hosts(value: Any) -> dict[str, dict[str, int]]:
    """The per-host counts a job already has (a resumed job), ignoring anything malformed."""
    if not isinstance(value, dict):
        return {}
    return {str(host): {key: int(counts.get(key) or 0) for key in HOST_COUNTERS}
            for host, counts in list(value.items())[:MAX_HOSTS + 1] if isinstance(counts, dict)}

class CrawlRecorder:
    """Turns crawl events into ScrapedItem rows, imports, counters and a log tail for one job.

    ``save(**fields)`` writes fields to the job row (the job's ``ctx.update``); ``cancel_requested()``
    reads the row's cancel flag. Everything runs in the job's thread: ``on_event`` and ``should_stop``
    are the callbacks of ``scraping.crawl_runner.run_crawl``.
    """

    def __init__(self, job: ScrapeJob, *, save: Callable[..., None], cancel_requested: Callable[[], bool],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.job = job
        self.save = save
        self._cancel_requested = cancel_requested
        self.clock = clock
        self.items: dict[str, ScrapedItem] = {}
        self._unsaved: list[ScrapedItem] = []
        self._dirty: dict[int, ScrapedItem] = {}
        self.pending: deque[tuple[str, str, str]] = deque()  # (kind, url, path or first url)
        self.counters = {**empty_counters(), **{k: v for k, v in (job.counters or {}).items() if k in COUNTER_KEYS}}
        # Per image host (where each image was fetched from, a CDN included): imported, duplicates, failed,
        # opted out; kept in the job's counters under "hosts" for the scrape history.
        self.hosts: dict[str, dict[str, int]] = _restored_hosts((job.counters or {}).get("hosts"))
        self.buckets: Counter[str] = Counter(job.error_buckets or {})
        self.log: deque[str] = deque((job.log_tail or "").splitlines(), maxlen=LOG_TAIL_LINES)
        self.stage = Stage.CRAWLING
        self.stopping = False
        self.start_failure: str | None = None
        self.done: dict[str, Any] | None = None
        self.album: Album | None = job.album
        self._last_flush = 0.0
        self._changed = True  # anything to write since the last flush
        self._last_cancel_poll = 0.0
        self._import_total = 0
        self._album_pending: list[int] = []

    # -- the runner's callbacks ------------------------------------------------------------------------

    def on_event(self, event: dict[str, Any]) -> None:
        handler = getattr(self, f"_on_{event.get('event')}", None)
        if handler is not None:
            handler(event)
            self._changed = True
        self.import_some()
        self.flush()

    def should_stop(self) -> bool:
        if not self.stopping:
            now = self.clock()
            if now - self._last_cancel_poll >= CANCEL_POLL_SECONDS:
                self._last_cancel_poll = now
                if self._cancel_requested():
                    self.stopping = True
                    self._log("INFO Cancel requested: stopping the crawl; imported images are kept.")
                    self.flush(force=True)
                    return True
        if self.stopping:
            return True
        self.import_some()
        self.flush()
        return False

    # -- events ----------------------------------------------------------------------------------------

    def _on_started(self, event: dict[str, Any]) -> None:
        self._log(f"INFO Crawl started at {event.get('start_url', self.job.start_url)}")

    def _on_page(self, event: dict[str, Any]) -> None:
        self.counters["pages"] += 1

    def _on_page_failed(self, event: dict[str, Any]) -> None:
        self.counters["pages_failed"] += 1
        bucket = str(event.get("bucket") or "error")
        self.buckets[bucket] += 1
        if not event.get("depth") and self.start_failure is None:
            self.start_failure = str(event.get("reason") or bucket)
        self._log(f"WARNING page {event.get('url')}: {bucket} ({event.get('reason', '')})")

    def _on_image_discovered(self, event: dict[str, Any]) -> None:
        self._item(event)

    def _on_image_downloaded(self, event: dict[str, Any]) -> None:
        item = self._item(event)
        item.final_url = str(event.get("final_url") or item.url)
        item.sha256 = str(event.get("sha256") or "")
        item.bytes = event.get("bytes")
        item.width, item.height = event.get("width"), event.get("height")
        item.format = str(event.get("format") or "")[:10]
        item.content_type = str(event.get("content_type") or "")[:100]
        item.optout = _signals(event.get("optout"))
        item.licence_hints = [h for h in (event.get("licence") or []) if isinstance(h, dict)][:20]
        fetched = parse_datetime(str(event.get("fetched_at") or ""))
        item.fetched_at = fetched if fetched is not None and fetched.tzinfo is not None else None
        self._set(item, Outcome.DOWNLOADED)
        self.counters["downloaded"] += 1
        self.pending.append(("import", item.url, str(event.get("path") or "")))

    def _on_image_failed(self, event: dict[str, Any]) -> None:
        item = self._item(event)
        bucket = str(event.get("bucket") or "error")[:40]
        status = event.get("status")
        item.http_status = status if isinstance(status, int) and 0 < status < 1000 else None
        self._fail(item, bucket, str(event.get("reason") or bucket))

    def _on_image_skipped(self, event: dict[str, Any]) -> None:
        item = self._item(event)
        reason = event.get("reason")
        if reason == "too_small":
            item.bytes = event.get("bytes")
            self._too_small(item, f"{event.get('bytes')} bytes, below the minimum of {event.get('min_bytes')}")
        elif reason == "opted_out":
            item.optout = _signals(event.get("optout"))
            self._set(item, Outcome.OPTED_OUT, describe_optout(item.optout) or "opted out")
            self._count("opted_out", item)
        elif reason == "duplicate":
            item.sha256 = str(event.get("sha256") or "")
            item.bytes = event.get("bytes")
            # Resolved in turn with the imports, after the first copy's own import.
            self.pending.append(("duplicate", item.url, str(event.get("duplicate_of") or "")))
        else:
            self._skip(item, SKIP_REASONS.get(str(reason), str(reason)))

    def _on_log(self, event: dict[str, Any]) -> None:
        self._log(f"{event.get('level', 'INFO')} {event.get('message', '')}")

    def _on_done(self, event: dict[str, Any]) -> None:
        self.done = event
        stats = event.get("stats") or {}
        self._log(f"INFO Crawl ended: {event.get('reason')}"
                  + (f" (limits: {', '.join(event.get('limits_hit') or [])})" if event.get("limits_hit") else "")
                  + (f"; {event['error']}" if event.get("error") else "")
                  + f"; {stats.get('pages', 0)} pages, {stats.get('images_downloaded', 0)} images downloaded")

    # -- items -----------------------------------------------------------------------------------------

    def _item(self, event: dict[str, Any]) -> ScrapedItem:
        url = str(event.get("url") or "")
        item = self.items.get(url)
        if item is None:
            item = ScrapedItem(
                job_id=self.job.pk, url=url, page_url=str(event.get("page_url") or ""),
                alt=str(event.get("alt") or ""), title=str(event.get("title") or ""),
                found_in=str(event.get("source") or "")[:10], seq=len(self.items) + 1,
            )
            self.items[url] = item
            self._unsaved.append(item)
            self.counters["discovered"] += 1
        return item

    def _set(self, item: ScrapedItem, outcome: str, reason: str = "") -> None:
        item.outcome = outcome
        item.reason = reason[:2000]
        if item.pk is not None:
            self._dirty[item.pk] = item

    def _fail(self, item: ScrapedItem, bucket: str, reason: str) -> None:
        item.bucket = bucket
        self._set(item, Outcome.FAILED, reason)
        self._count("failed", item)
        self.buckets[bucket] += 1

    def _count(self, key: str, item: ScrapedItem) -> None:
        self.counters[key] += 1
        host = (urlsplit(item.final_url or item.url).hostname or "")[:255] or "(no host)"
        entry = self.hosts.get(host)
        if entry is None:
            if len(self.hosts) >= MAX_HOSTS:
                host, entry = OTHER_HOSTS, self.hosts.setdefault(OTHER_HOSTS, dict.fromkeys(HOST_COUNTERS, 0))
            else:
                entry = self.hosts[host] = dict.fromkeys(HOST_COUNTERS, 0)
        entry[key] += 1

    def _too_small(self, item: ScrapedItem, reason: str) -> None:
        self._set(item, Outcome.TOO_SMALL, reason)
        self.counters["too_small"] += 1

    def _skip(self, item: ScrapedItem, reason: str) -> None:
        self._set(item, Outcome.SKIPPED, reason)
        self.counters["skipped"] += 1

    def _log(self, line: str) -> None:
        for part in line.splitlines() or [""]:
            self.log.append(part[:500])

    # -- importing -------------------------------------------------------------------------------------

    def import_some(self, budget: float = IMPORT_SLICE_SECONDS) -> int:
        """Import pending images for up to ``budget`` seconds (at least one); returns how many."""
        if self.stopping:
            return 0
        started, done = self.clock(), 0
        while self.pending and (done == 0 or self.clock() - started < budget):
            self._resolve(*self.pending.popleft())
            done += 1
        return done

    def import_remaining(self) -> None:
        """The importing stage: what the crawl left pending, with progress and cancel checks."""
        self.stage = Stage.IMPORTING
        self._import_total = len(self.pending)
        self.flush(force=True)
        while self.pending and not self.stopping:
            self.import_some()
            if self._cancel_requested():
                self.stopping = True
            self.flush()

    def skip_pending(self, reason: str) -> None:
        while self.pending:
            _kind, url, _extra = self.pending.popleft()
            self._skip(self.items[url], reason)

    def _resolve(self, kind: str, url: str, extra: str) -> None:
        self._changed = True
        item = self.items[url]
        if kind == "duplicate":
            self._resolve_duplicate(item, extra)
        else:
            self._import(item, Path(extra) if extra else None)

    def _resolve_duplicate(self, item: ScrapedItem, first_url: str) -> None:
        first = self.items.get(first_url)
        if first is not None and first.outcome in (Outcome.IMPORTED, Outcome.DUPLICATE) and first.image_id:
            item.image_id = first.image_id
            self._set(item, Outcome.DUPLICATE, f"the same file as {first_url}")
            self._count("duplicates", item)
            self._labels(item)
        elif first is not None and first.outcome == Outcome.TOO_SMALL:
            self._too_small(item, f"the same file as {first_url}: {first.reason}")
        elif first is not None and first.outcome == Outcome.FAILED:
            self._fail(item, first.bucket or "rejected", f"the same file as {first_url}: {first.reason}")
        else:
            self._skip(item, f"the same file as {first_url}, which was not imported")

    def _import(self, item: ScrapedItem, path: Path | None) -> None:
        from gallery.services import image_ingest

        job = self.job
        width, height = item.width or 0, item.height or 0
        if width < job.min_width or height < job.min_height:
            self._too_small(item, f"{width}×{height} pixels, below the minimum of {job.min_width}×{job.min_height}")
            self._discard(path)
            return
        try:
            data = path.read_bytes() if path is not None else b""
        except OSError as exc:
            self._fail(item, "error", f"the downloaded file could not be read ({exc.strerror or exc})")
            return
        title = (item.title or item.alt)[:300]
        description = item.alt if item.title and item.alt and item.alt != item.title else ""
        try:
            result = image_ingest(
                owner=job.owner, data=data, filename=scraped_filename(item.final_url or item.url, item.format),
                source=ImageSource.SCRAPE, source_url=item.final_url or item.url, source_page_url=item.page_url,
                source_detail={"scrape_job": job.pk, "alt": item.alt[:1000], "title": item.title[:1000]},
                title=title, description=description,
                # Thumbnails from the same decode: a scrape is a worker already, and a queue round trip
                # per image would cost more than making them here.
                make_derivatives_inline=True,
                provenance={"fetched_at": item.fetched_at, "optout_signals": item.optout, "checked": True,
                            "page_licence": item.licence_hints},
            )
        except ImageRejected as exc:
            self._fail(item, "rejected", str(exc))
            return
        except DatabaseError:
            raise
        except Exception as exc:  # one bad file must not end the scrape; the reason stays on its row
            logger.exception("importing %s for scrape job %s failed", item.url, job.pk)
            self._fail(item, "error", f"import failed: {type(exc).__name__}: {exc}")
            return
        item.image_id = result.image.pk
        # Added to the album in batches when the rows are written (one statement set per batch).
        self._album_pending.append(result.image.pk)
        if result.created:
            self._set(item, Outcome.IMPORTED)
            self._count("imported", item)
        else:
            self._set(item, Outcome.DUPLICATE, "already in the gallery")
            self._count("duplicates", item)
        self._labels(item, image=result.image)
        self._discard(path)

    def _labels(self, item: ScrapedItem, image=None) -> None:
        if not (item.alt or item.title) or not hooks.scraped_label_hooks:
            return
        if image is None:
            from gallery.models import Image

            image = Image.objects.filter(pk=item.image_id).first()
            if image is None:
                return
        for hook in hooks.scraped_label_hooks:
            try:
                hook(image=image, alt=item.alt, title=item.title)
            except Exception:  # labels are a bonus; the import stands without them
                logger.warning("scraped label hook %s failed", getattr(hook, "__name__", hook), exc_info=True)

    @staticmethod
    def _discard(path: Path | None) -> None:
        # The crawl's copy is not needed once imported; the work dir goes at the end anyway.
        if path is not None:
            path.unlink(missing_ok=True)

    def _album(self) -> Album:
        if self.album is None:
            from gallery.services import album_get_or_create

            try:
                self.album, _ = album_get_or_create(owner=self.job.owner, name=self.job.album_name)
            except IntegrityError:  # another job created it at the same moment
                self.album = Album.objects.get(owner=self.job.owner, name=self.job.album_name.strip())
            ScrapeJob.objects.filter(pk=self.job.pk).update(album=self.album)
            self.job.album = self.album
        return self.album

    # -- writing ---------------------------------------------------------------------------------------

    def flush(self, *, force: bool = False, **fields: Any) -> None:
        """Write new and changed items and the job's figures, at most once per FLUSH_SECONDS unless forced."""
        now = self.clock()
        if not force and (not self._changed or now - self._last_flush < FLUSH_SECONDS):
            return
        self._last_flush, self._changed = now, False
        if self._unsaved:
            batch, self._unsaved = self._unsaved, []
            ScrapedItem.objects.bulk_create(batch, batch_size=500)
            if any(item.pk is None for item in batch):  # a backend that does not return ids
                ids = dict(ScrapedItem.objects.filter(job_id=self.job.pk, seq__in=[i.seq for i in batch])
                           .values_list("seq", "pk"))
                for item in batch:
                    item.pk = ids[item.seq]
        if self._dirty:
            batch_dirty, self._dirty = list(self._dirty.values()), {}
            _update_items(batch_dirty)
        if self._album_pending:
            from gallery.services import album_add_images

            images, self._album_pending = self._album_pending, []
            album_add_images(album=self._album(), images=images)
        self.save(counters={**self.counters, "hosts": self.hosts}, error_buckets=dict(self.buckets),
                  log_tail="\n".join(self.log),
                  stage=self.stage, progress=self.progress(), message=self.message(), **fields)

    def progress(self) -> float:
        if self.stage == Stage.IMPORTING:
            total = self._import_total or 1
            return 0.9 + 0.1 * (1 - len(self.pending) / total)
        job, c = self.job, self.counters
        crawled = max(c["pages"] / max(job.max_pages, 1), c["downloaded"] / max(job.max_images, 1))
        return min(0.9, 0.9 * crawled)

    def message(self) -> str:
        c = self.counters
        if self.stage == Stage.IMPORTING:
            return f"Importing: {len(self.pending)} image(s) left, {c['imported']} imported so far"
        return (f"Crawling: {c['pages']} page(s), {c['discovered']} image(s) found, {c['downloaded']} downloaded, "
                f"{c['imported']} imported")
