"""TDMRep's site-wide file: each origin's ``/.well-known/tdmrep.json``, read once per crawl like robots.txt."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import scrapy
from scrapy.exceptions import IgnoreRequest
from scrapy.http.request import NO_CALLBACK
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet.defer import Deferred

from . import optout

logger = logging.getLogger("scraping.crawler.tdmrep")

TDMREP_META = "imagineer_tdmrep"  # the tdmrep.json rule that covers the request's URL, or None
TDMREP_PATH = "/.well-known/tdmrep.json"
FETCH_PRIORITY = 20  # before the images and pages waiting on it


class TdmRepReserved(IgnoreRequest):
    """An image whose URL tdmrep.json reserves, under the "respect" policy: not downloaded at all."""

    def __init__(self, signals: list[dict[str, str]]) -> None:
        super().__init__("TDM rights reserved by tdmrep.json")
        self.signals = signals


class TdmRepMiddleware:
    """Reads each origin's ``/.well-known/tdmrep.json`` once, before its first request goes out (like
    robots.txt), and puts the rule covering each request's URL in ``request.meta[TDMREP_META]``.

    Under the "respect" policy an image request whose URL is reserved stops here (``TdmRepReserved``): the
    spider records it as opted out without downloading it. Pages always go through (their links are still
    followed; their images are opted out by the spider). No file, an error or a malformed file: no rules.
    """

    def __init__(self, crawler: Any) -> None:
        self.crawler = crawler
        self._rules: dict[str, Any] = {}

    @classmethod
    def from_crawler(cls, crawler: Any) -> TdmRepMiddleware:
        return cls(crawler)

    async def process_request(self, request: scrapy.Request) -> None:
        if request.meta.get("imagineer_tdmrep_fetch"):
            return None
        parts = urlsplit(request.url)
        if parts.scheme not in ("http", "https"):
            return None
        origin = f"{parts.scheme}://{parts.netloc}"
        rules = await self._origin_rules(origin)
        rule = rules.match(request.url) if rules is not None else None
        request.meta[TDMREP_META] = rule
        spider = self.crawler.spider
        if (rule and rule.get("reserved") and request.meta.get("imagineer_image") is not None
                and spider is not None and spider.cfg.optout_policy == "respect"):
            raise TdmRepReserved(optout.tdmrep_signals(rule, where="image", url=request.url))
        return None

    async def _origin_rules(self, origin: str) -> Any:
        if origin not in self._rules:
            self._rules[origin] = waiting = Deferred()
            rules = optout.TdmRepRules([])
            fetch = scrapy.Request(
                origin + TDMREP_PATH, priority=FETCH_PRIORITY, callback=NO_CALLBACK,
                meta={"imagineer_tdmrep_fetch": True, "dont_obey_robotstxt": True},
            )
            try:
                response = await self.crawler.engine.download_async(fetch)
                if response.status == 200:
                    rules = optout.TdmRepRules.parse(response.body)
                self.crawler.stats.inc_value(f"imagineer/tdmrep_status/{response.status}")
            except Exception as exc:  # noqa: BLE001 - no file we can read means no rules from it
                self.crawler.stats.inc_value("imagineer/tdmrep_errors")
                logger.debug("No tdmrep.json from %s: %s", origin, exc)
            self._rules[origin] = rules
            waiting.callback(rules)
        found = self._rules[origin]
        if isinstance(found, Deferred):
            return await maybe_deferred_to_future(found)
        return found
