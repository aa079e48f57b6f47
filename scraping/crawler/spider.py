"""The image spider: follows same-site links breadth-first, collects images, saves their original bytes."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urldefrag, urlsplit

import scrapy
from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadCancelledError,
    DownloadConnectionRefusedError,
    DownloadFailedError,
    DownloadTimeoutError,
    IgnoreRequest,
    ResponseDataLossError,
)
from scrapy.http import HtmlResponse
from scrapy.linkextractors import IGNORED_EXTENSIONS
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.defer import deferred_from_coro
from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionLost, ConnectionRefusedError, DNSLookupError, TCPTimedOutError
from twisted.internet.error import TimeoutError as TxTimeoutError
from twisted.web._newclient import ResponseFailed

from . import optout
from .images import FILE_EXTENSION, ImageRejected, best_srcset_candidate, inspect_image
from .safety import UnresolvableRequest, UnsafeRequest
from .tdmrep import TDMREP_META, TdmRepReserved

if TYPE_CHECKING:
    from twisted.python.failure import Failure

    from .config import CrawlConfig
    from .events import Emitter
    from .guard import HostGuard

logger = logging.getLogger("scraping.crawler.spider")

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "jpe", "jfif", "png", "gif", "webp", "bmp", "tif", "tiff"})
SKIPPED_EXTENSIONS = frozenset(IGNORED_EXTENSIONS) - IMAGE_EXTENSIONS
IMAGE_ACCEPT = "image/webp,image/png,image/jpeg,image/gif,image/*;q=0.8,*/*;q=0.5"
# A page with more than this many links or images is capped (a generated page could hold millions).
MAX_LINKS_PER_PAGE = 1000
MAX_IMAGES_PER_PAGE = 1000
MAX_TEXT = 1000
IMAGE_PRIORITY = 10  # images before further pages: results arrive early, limits bite on pages first
MAX_URL_LENGTH = 2083  # Scrapy's URLLENGTH_LIMIT, which would drop longer requests without a word
PAGE_META = "imagineer_page"
MAX_LICENCE_HINTS = 20


def host_in_domains(url: str, domains: list[str]) -> bool:
    """Whether the URL's host is one of ``domains`` or a subdomain of one (ports do not matter)."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in domains)


def _text(value: Any) -> str:
    return " ".join(str(value or "").split())[:MAX_TEXT]


def _extension(url: str) -> str:
    path = urlsplit(url).path
    name = path.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


class PageScopeMiddleware:
    """Keeps pages within the allowed domains across redirects, with an event for each one it stops.

    It replaces Scrapy's OffsiteMiddleware, which drops redirected requests at scheduling time without
    calling their errback (the page would vanish from the event stream). Links are filtered by the spider
    before they become requests; images may come from any host (every one is still safety-checked).
    """

    def __init__(self, crawler: Any) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Any) -> PageScopeMiddleware:
        return cls(crawler)

    def process_request(self, request: scrapy.Request) -> None:
        spider = self.crawler.spider
        if not request.meta.get(PAGE_META) or not request.meta.get("redirect_urls") or spider is None:
            return None
        if request.meta.get("depth", 0) == 0:
            return None  # the start URL may move to another host; the spider adopts it
        if not host_in_domains(request.url, spider.allowed_domains):
            host = urlsplit(request.url).hostname
            self.crawler.stats.inc_value("imagineer/offsite_redirects")
            raise IgnoreRequest(f"Filtered offsite redirect to {host!r}")
        return None


def _header_values(response: scrapy.http.Response, name: bytes) -> list[str]:
    return [v.decode("latin-1") for v in response.headers.getlist(name)]


def _first_header(response: scrapy.http.Response, name: bytes) -> str | None:
    values = _header_values(response, name)
    return values[0] if values else None


class ImageSpider(scrapy.Spider):
    name = "imagineer"

    def __init__(self, *, config: CrawlConfig, emitter: Emitter, guard: HostGuard, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cfg = config
        self.emitter = emitter
        self.guard = guard
        self.allowed_domains = list(config.allowed_domains)
        self.token = optout.bot_token(config.user_agent)
        self.opted_out = 0
        self.started_at = time.monotonic()
        self._page_keys: set[str] = set()
        self._pages_scheduled = 0
        self.pages_ok = 0
        self.page_failures: Counter[str] = Counter()
        self._images: dict[str, dict[str, Any]] = {}
        self._outcomes: dict[str, str] = {}
        self._by_sha: dict[str, tuple[str, str]] = {}
        self._images_dir: Path | None = None
        self.saved = 0
        self.bytes_saved = 0
        self.failures: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.limits_hit: set[str] = set()
        self.stop_reason: str | None = None
        self.final_reason: str | None = None
        self._finalized = False

    # -- requests -------------------------------------------------------------------------------------

    async def start(self):
        request = self._page_request(self.cfg.start_url, dont_filter=True)
        if request is not None:
            self._pages_scheduled = 1
            yield request

    def _page_request(self, url: str, *, dont_filter: bool = False) -> scrapy.Request | None:
        try:
            request = scrapy.Request(
                url, callback=self.parse_page, errback=self.page_error, dont_filter=dont_filter, meta={PAGE_META: True}
            )
        except ValueError:
            return None
        self._page_keys.add(urldefrag(request.url)[0])
        return request

    def _image_request(self, url: str, page_url: str, alt: str, title: str, source: str,
                       page: dict[str, Any] | None = None) -> scrapy.Request | None:
        if self.stop_reason is not None:
            return None
        try:
            request = scrapy.Request(
                url,
                callback=self.parse_image,
                errback=self.image_error,
                # URLs are deduplicated here (so every discovered image gets its outcome); the same bytes
                # under two URLs are caught by hash.
                dont_filter=True,
                priority=IMAGE_PRIORITY,
                headers={"Accept": IMAGE_ACCEPT},
            )
        except ValueError:
            return None
        key = urldefrag(request.url)[0]
        if key in self._images:
            return None
        if not self.cfg.images_any_domain and not host_in_domains(key, self.allowed_domains):
            return None
        info = {"url": key, "page_url": page_url, "alt": alt, "title": title}
        self._images[key] = info
        request.meta["imagineer_image"] = info
        request.meta["imagineer_source"] = source
        request.meta["imagineer_page_ctx"] = page or {"optout": [], "licence": []}
        return request

    # -- pages ----------------------------------------------------------------------------------------

    def parse_page(self, response: scrapy.http.Response):
        depth = response.meta.get("depth", 0)
        self.pages_ok += 1
        is_html = isinstance(response, HtmlResponse)
        redirect_urls = response.meta.get("redirect_urls", [])
        if depth == 0 and redirect_urls:
            # The start URL moved (http -> https, bare -> www): the new host is the site now.
            final_host = urlsplit(response.url).hostname or ""
            if final_host and not host_in_domains(response.url, self.allowed_domains):
                self.allowed_domains.append(final_host)
        images: list[tuple[str, str, str, str]] = []
        links: list[scrapy.Request] = []
        if is_html:
            images = list(self._extract_images(response))[:MAX_IMAGES_PER_PAGE]
            for url in self._extract_links(response)[:MAX_LINKS_PER_PAGE]:
                request = self._maybe_follow(url, depth)
                if request is not None:
                    links.append(request)
        page_ctx = {"optout": self._page_signals(response, is_html),
                    "licence": self._licence_hints(response) if is_html else []}
        image_requests = []
        for url, alt, title, source in images:
            request = self._image_request(url, response.url, alt, title, source, page_ctx)
            if request is not None:
                image_requests.append(request)
        self.emitter.emit(
            "page",
            url=response.url,
            requested_url=redirect_urls[0] if redirect_urls else response.url,
            status=response.status,
            depth=depth,
            content_type=response.headers.get(b"Content-Type", b"").decode("latin-1"),
            html=is_html,
            links=len(links),
            images=len(image_requests),
            redirect_urls=redirect_urls,
            optout=page_ctx["optout"],
        )
        # The page first, then what it revealed: a consumer can attach images to an existing page row.
        for request in image_requests:
            self.emitter.emit(
                "image_discovered", **request.meta["imagineer_image"], source=request.meta["imagineer_source"]
            )
        if page_ctx["optout"] and self.cfg.optout_policy == "respect":
            # The page opted out of AI use: its images are not even fetched.
            for request in image_requests:
                self._opt_out(request.meta["imagineer_image"], page_ctx["optout"])
        else:
            yield from image_requests
        yield from links

    def _page_signals(self, response: scrapy.http.Response, is_html: bool) -> list[dict[str, str]]:
        url = response.url
        signals = optout.x_robots_signals(_header_values(response, b"X-Robots-Tag"), token=self.token,
                                          where="page", url=url)
        signals += optout.tdm_header_signals(_first_header(response, b"tdm-reservation"),
                                             _first_header(response, b"tdm-policy"), where="page", url=url)
        if is_html:
            metas = [(m.attrib.get("name") or "", m.attrib.get("content") or "")
                     for m in response.css("meta[name]")[:200]]
            signals += optout.meta_robots_signals(metas, token=self.token, url=url)
            signals += optout.tdm_meta_signals(metas, url=url)
        signals += optout.tdmrep_signals(response.meta.get(TDMREP_META), where="page", url=url)
        return signals

    def _image_signals(self, response: scrapy.http.Response) -> list[dict[str, str]]:
        url = response.url
        signals = optout.x_robots_signals(_header_values(response, b"X-Robots-Tag"), token=self.token,
                                          where="image", url=url)
        signals += optout.tdm_header_signals(_first_header(response, b"tdm-reservation"),
                                             _first_header(response, b"tdm-policy"), where="image", url=url)
        signals += optout.tdmrep_signals(response.meta.get(TDMREP_META), where="image", url=url)
        return signals

    def _licence_hints(self, response: HtmlResponse) -> list[dict[str, str]]:
        """Licence links of a page: rel="license" on link, a and area, and Creative Commons markup."""
        hints: list[dict[str, str]] = []
        seen: set[tuple[str, str]] = set()

        def add(kind: str, value: str | None) -> None:
            value = " ".join((value or "").split())[:2000]
            if not value or (kind, value) in seen or len(hints) >= MAX_LICENCE_HINTS:
                return
            seen.add((kind, value))
            hints.append({"kind": kind, "value": value, "page_url": response.url})

        for node in response.xpath("//link[@rel] | //a[@rel] | //area[@rel]"):
            rels = (node.attrib.get("rel") or "").lower().split()
            if "license" in rels or "cc:license" in rels:
                href = node.attrib.get("href")
                try:
                    add(f"{node.root.tag}-rel-license", response.urljoin(href) if href else "")
                except ValueError:
                    continue
        for node in response.xpath("//*[@property='cc:license' or @property='dc:rights' "
                                   "or @property='cc:attributionName' or @itemprop='license']"):
            value = node.attrib.get("href") or node.attrib.get("resource") or node.attrib.get("content") \
                or " ".join(node.xpath(".//text()").getall())
            add(f"cc-markup:{node.attrib.get('property') or node.attrib.get('itemprop')}", value)
        for href in response.xpath("//a/@href").getall()[:MAX_LINKS_PER_PAGE]:
            if "creativecommons.org/licenses/" in href or "creativecommons.org/publicdomain/" in href:
                add("cc-link", href.strip())
        return hints

    def _absolute(self, response: HtmlResponse, href: str | None) -> str | None:
        href = (href or "").strip()
        if not href or href.startswith("#"):
            return None
        try:
            url = response.urljoin(href)
        except ValueError:
            return None
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            return None  # data:, javascript:, mailto:, file: ... are not fetched (nor reported)
        url = urldefrag(url)[0]
        return url if len(url) <= MAX_URL_LENGTH else None

    def _extract_images(self, response: HtmlResponse):
        for img in response.css("img"):
            attrs = img.attrib
            url, source = None, "img"
            srcset = attrs.get("srcset") or attrs.get("data-srcset")
            if srcset:
                candidate = best_srcset_candidate(srcset)
                url = self._absolute(response, candidate)
                source = "srcset"
            if url is None:
                url = self._absolute(response, attrs.get("src") or attrs.get("data-src"))
                source = "img"
            if url is not None:
                yield url, _text(attrs.get("alt")), _text(attrs.get("title")), source
        for a in response.css("a[href]"):
            url = self._absolute(response, a.attrib.get("href"))
            if url is None or _extension(url) not in IMAGE_EXTENSIONS:
                continue
            alt = _text(a.css("img::attr(alt)").get())
            title = _text(a.attrib.get("title") or " ".join(a.css("::text").getall()))
            yield url, alt, title, "link"

    def _extract_links(self, response: HtmlResponse) -> list[str]:
        out = []
        for href in response.css("a::attr(href), area::attr(href)").getall():
            url = self._absolute(response, href)
            if url is None:
                continue
            ext = _extension(url)
            if ext in IMAGE_EXTENSIONS or ext in SKIPPED_EXTENSIONS:
                continue
            out.append(url)
        return out

    def _maybe_follow(self, url: str, depth: int) -> scrapy.Request | None:
        if not host_in_domains(url, self.allowed_domains):
            return None
        if urldefrag(url)[0] in self._page_keys or self.stop_reason is not None:
            return None
        if depth >= self.cfg.depth:
            self.limits_hit.add("depth")
            self.crawler.stats.inc_value("imagineer/links_beyond_depth")
            return None
        if self._pages_scheduled >= self.cfg.max_pages:
            self.limits_hit.add("max_pages")
            self.crawler.stats.inc_value("imagineer/links_beyond_max_pages")
            return None
        request = self._page_request(url)
        if request is not None:
            self._pages_scheduled += 1
        return request

    def page_error(self, failure: Failure) -> None:
        request = failure.request
        bucket, reason, status = self.classify(failure)
        redirect_urls = request.meta.get("redirect_urls", [])
        self.page_failures[bucket] += 1
        self.emitter.emit(
            "page_failed",
            url=redirect_urls[0] if redirect_urls else request.url,
            final_url=request.url,
            depth=request.meta.get("depth", 0),
            bucket=bucket,
            reason=reason,
            status=status,
        )

    # -- images ---------------------------------------------------------------------------------------

    def parse_image(self, response: scrapy.http.Response) -> None:
        info = response.meta["imagineer_image"]
        if info["url"] in self._outcomes:
            return
        try:
            self._handle_image(response, info)
        except Exception as exc:
            logger.exception("Could not handle the image %s", info["url"])
            self._fail(info, "error", f"{type(exc).__name__}: {exc}", response.status)

    def _handle_image(self, response: scrapy.http.Response, info: dict[str, Any]) -> None:
        page_ctx = response.meta.get("imagineer_page_ctx") or {"optout": [], "licence": []}
        signals = [*page_ctx["optout"], *self._image_signals(response)]
        if signals and self.cfg.optout_policy == "respect":
            self._opt_out(info, signals)
            return
        if self.saved >= self.cfg.max_images:
            self._skip(info, "max_images")
            return
        body = response.body
        size = len(body)
        if size < self.cfg.min_bytes:
            self._skip(info, "too_small", bytes=size, min_bytes=self.cfg.min_bytes)
            return
        sha = hashlib.sha256(body).hexdigest()
        if sha in self._by_sha:
            first_url, path = self._by_sha[sha]
            self._skip(info, "duplicate", duplicate_of=first_url, sha256=sha, path=path, bytes=size)
            return
        content_type = response.headers.get(b"Content-Type", b"").decode("latin-1")
        try:
            fmt, width, height = inspect_image(body, max_pixels=self.cfg.max_image_pixels, content_type=content_type)
        except ImageRejected as exc:
            self._fail(info, exc.bucket, str(exc), response.status)
            return
        path = self._save(body, sha, FILE_EXTENSION[fmt])
        self._by_sha[sha] = (info["url"], path)
        self.saved += 1
        self.bytes_saved += size
        self._outcomes[info["url"]] = "downloaded"
        self.emitter.emit(
            "image_downloaded",
            **info,
            final_url=response.url,
            path=path,
            bytes=size,
            sha256=sha,
            content_type=content_type,
            format=fmt,
            width=width,
            height=height,
            fetched_at=datetime.now(UTC).isoformat(timespec="seconds"),
            optout=signals,
            licence=page_ctx["licence"],
        )
        if self.saved >= self.cfg.max_images:
            self.limits_hit.add("max_images")
            self.close_crawl("max_images")

    def _save(self, body: bytes, sha: str, ext: str) -> str:
        if self._images_dir is None:  # made and resolved once, not for every image
            self.cfg.images_dir.mkdir(parents=True, exist_ok=True)
            self._images_dir = self.cfg.images_dir.resolve()
        final = self._images_dir / f"{self.saved + 1:05d}-{sha[:16]}.{ext}"
        partial = self._images_dir / f".{final.name}.part"
        with open(partial, "wb") as fh:
            fh.write(body)
        os.replace(partial, final)  # never a half-written file under its final name
        return str(final)

    def image_error(self, failure: Failure) -> None:
        info = failure.request.meta.get("imagineer_image")
        if info is None or info["url"] in self._outcomes:
            return
        if isinstance(failure.value, TdmRepReserved):
            self._opt_out(info, failure.value.signals)
            return
        bucket, reason, status = self.classify(failure)
        self._fail(info, bucket, reason, status)

    def _fail(self, info: dict[str, Any], bucket: str, reason: str, status: int | None) -> None:
        self._outcomes[info["url"]] = "failed"
        self.failures[bucket] += 1
        self.emitter.emit("image_failed", **info, bucket=bucket, reason=reason[:1000], status=status)

    def _opt_out(self, info: dict[str, Any], signals: list[dict[str, str]]) -> None:
        self.opted_out += 1
        self._skip(info, "opted_out", optout=signals)

    def _skip(self, info: dict[str, Any], reason: str, **extra: Any) -> None:
        self._outcomes[info["url"]] = "skipped"
        self.skipped[reason] += 1
        self.emitter.emit("image_skipped", **info, reason=reason, **extra)

    # -- failures -------------------------------------------------------------------------------------

    def classify(self, failure: Failure) -> tuple[str, str, int | None]:
        """(bucket, reason, HTTP status) of a failed request."""
        exc = failure.value
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, HttpError):
            status = exc.response.status
            return f"http_{status}", f"HTTP {status}", status
        if isinstance(exc, UnsafeRequest):
            return "refused_unsafe", reason, None
        if isinstance(exc, UnresolvableRequest):
            return "dns", reason, None
        if isinstance(exc, IgnoreRequest):
            lowered = reason.lower()
            if "robots.txt" in lowered:
                return "robots", reason, None
            if "offsite" in lowered:
                return "offsite", reason, None
            if "redirection" in lowered:
                return "redirect_limit", reason, None
            return "ignored", reason, None
        if _is(exc, CannotResolveHostError, DNSLookupError):
            host = (urlsplit(failure.request.url).hostname or "").lower()
            refused = self.guard.refused_at_connect.get(host)
            if refused:
                return "refused_unsafe", f"refused at connection time: {refused}", None
            return "dns", reason, None
        if _is(exc, DownloadTimeoutError, TxTimeoutError, TCPTimedOutError):
            return "timeout", reason, None
        if _is(exc, DownloadCancelledError, CancelledError):
            if self.stop_reason == "cancelled":
                return "cancelled", reason, None
            # The HTTP handler cancels a download only when it passes DOWNLOAD_MAXSIZE.
            return "too_large", f"larger than {self.cfg.max_response_bytes} bytes", None
        if _is(exc, DownloadConnectionRefusedError, ConnectionRefusedError):
            return "connection_refused", reason, None
        if _is(exc, ResponseDataLossError):
            return "data_loss", reason, None
        if _is(exc, DownloadFailedError, ConnectionLost, ResponseFailed):
            return "connection_error", reason, None
        return "error", f"{type(exc).__name__}: {reason}", None

    # -- closing --------------------------------------------------------------------------------------

    def close_crawl(self, reason: str) -> None:
        """Stop the crawl (reason "max_images" or "cancelled"); outstanding requests are dropped."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        engine = self.crawler.engine
        if engine is not None and engine.spider is not None:
            deferred_from_coro(engine.close_spider_async(reason=reason))

    def finalize(self, reason: str) -> None:
        """Give every discovered image that has no outcome yet one: the crawl ended before it."""
        if self._finalized:
            return
        self._finalized = True
        why = reason if reason in ("cancelled", "max_images") else "not_fetched"
        for url, info in self._images.items():
            if url not in self._outcomes:
                self._skip(info, why)

    def closed(self, reason: str) -> None:
        self.final_reason = reason
        self.finalize(reason)

    def summary(self, reason: str | None = None) -> dict[str, Any]:
        stats = self.crawler.stats.get_stats() if self.crawler.stats else {}
        return {
            "finish_reason": reason or self.final_reason,
            "pages": self.pages_ok,
            "pages_failed": sum(self.page_failures.values()),
            "page_failures": dict(self.page_failures),
            "images_discovered": len(self._images),
            "images_downloaded": self.saved,
            "images_failed": sum(self.failures.values()),
            "images_skipped": sum(self.skipped.values()),
            "images_opted_out": self.opted_out,
            "failures": dict(self.failures),
            "skipped": dict(self.skipped),
            "bytes_downloaded": self.bytes_saved,
            "requests": stats.get("downloader/request_count", 0),
            "responses": stats.get("downloader/response_count", 0),
            "elapsed_s": round(time.monotonic() - self.started_at, 3),
            "guard": self.guard.stats(),
            "scrapy": {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in stats.items()},
        }


def _is(exc: BaseException, *types: type) -> bool:
    return isinstance(exc, types)
