"""``python -m scraping.crawler.run [CONFIG.json]``: run one crawl, write events as JSON lines on stdout.

The configuration (see ``config``) comes from the file named on the command line, or from stdin when
there is none (or it is ``-``). Events are described in ``events``; the last line is always ``done``.
Nothing else is written to stdout (stray output is sent to stderr). The log goes to ``log_file``.

Each crawl runs in its own process so it gets a fresh Twisted reactor. SIGINT or SIGTERM closes the
crawl gracefully with reason "cancelled"; if that takes longer than ``cancel_grace`` seconds (a slow
download in flight) the process writes ``done`` and exits anyway; a second signal exits at once.
Files already saved stay. Exit status: 0 after a crawl (whatever its reason), 1 on an internal error,
2 on an invalid configuration.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from .config import ConfigError, CrawlConfig
from .events import Emitter, EventLogHandler
from .guard import HostGuard

logger = logging.getLogger("scraping.crawler.run")

REASON_ALIASES = {"shutdown": "cancelled"}
# Signals that arrive while Scrapy is still importing; the crawl acts on them once the reactor runs.
_early_signals: list[int] = []
ASYNCIO_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"


def build_settings(cfg: CrawlConfig, guard: HostGuard) -> dict[str, Any]:
    """Scrapy settings for one crawl; Scrapy's own limits wherever one exists."""
    return {
        "BOT_NAME": "imagineer",
        "TWISTED_REACTOR": ASYNCIO_REACTOR,
        "USER_AGENT": cfg.user_agent,
        "ROBOTSTXT_OBEY": cfg.obey_robots,
        # Pages are limited to cfg.depth by the spider; +1 lets the images of the deepest pages through.
        "DEPTH_LIMIT": cfg.depth + 1,
        "DEPTH_PRIORITY": 1,  # breadth-first, so page limits keep the pages nearest the start
        "SCHEDULER_DISK_QUEUE": "scrapy.squeues.PickleFifoDiskQueue",
        "SCHEDULER_MEMORY_QUEUE": "scrapy.squeues.FifoMemoryQueue",
        "CLOSESPIDER_TIMEOUT": cfg.max_seconds,
        # A backstop only: the spider counts pages and images itself (this counts every response).
        "CLOSESPIDER_PAGECOUNT": cfg.max_pages + 10 * cfg.max_images + 100,
        "DOWNLOAD_TIMEOUT": cfg.download_timeout,
        "DOWNLOAD_MAXSIZE": cfg.max_response_bytes,
        "DOWNLOAD_WARNSIZE": 0,
        "DOWNLOAD_DELAY": cfg.delay,
        "AUTOTHROTTLE_ENABLED": cfg.autothrottle,
        "AUTOTHROTTLE_START_DELAY": max(cfg.delay, 0.5),
        "CONCURRENT_REQUESTS": cfg.concurrency,
        "CONCURRENT_REQUESTS_PER_DOMAIN": cfg.concurrency,
        "RETRY_TIMES": cfg.retries,
        "REDIRECT_MAX_TIMES": 10,
        "COOKIES_ENABLED": False,
        # No control servers: telnet, and Scrapy 2.19's RemoteControl (an HTTP server on localhost that runs
        # Python sent to it, its token written to a file in the home directory).
        "TELNETCONSOLE_ENABLED": False,
        "REMOTE_CONTROL_ENABLED": False,
        "EXTENSIONS": {
            "scrapy.extensions.telnet.TelnetConsole": None,
            "scrapy.extensions.remote_control.RemoteControl": None,
            "scrapy.extensions.feedexport.FeedExporter": None,
            "scrapy.extensions.spiderstate.SpiderState": None,
        },
        # An environment proxy would make the proxy, not our resolver, pick the address.
        "HTTPPROXY_ENABLED": False,
        "DOWNLOAD_HANDLERS": {"file": None, "data": None, "s3": None, "ftp": None},
        "DOWNLOADER_MIDDLEWARES": {
            "scraping.crawler.safety.SafetyMiddleware": 1,  # first of all, before robots.txt and the rest
            "scrapy.downloadermiddlewares.offsite.OffsiteMiddleware": None,
            "scraping.crawler.spider.PageScopeMiddleware": 50,
            # After the safety checks; its own fetch of tdmrep.json passes through them too.
            "scraping.crawler.tdmrep.TdmRepMiddleware": 60,
        },
        "TWISTED_DNS_RESOLVER": "scraping.crawler.safety.GuardedResolver",
        "DNSCACHE_ENABLED": False,
        "IMAGINEER_GUARD": guard,
        "LOG_LEVEL": cfg.log_level,
        "LOG_INSTALL_ROOT_HANDLER": False,
        "STATS_DUMP": True,
        "MEMUSAGE_ENABLED": False,
    }


def _take_stdout() -> TextIO:
    """Keep stdout for events only: a private copy for us, fd 1 and sys.stdout point to stderr."""
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", encoding="utf-8", buffering=1)


def _read_config(argv: list[str]) -> Any:
    if argv and argv[0] != "-":
        with open(argv[0], encoding="utf-8") as fh:
            return json.load(fh)
    return json.load(sys.stdin)


def _setup_logging(cfg: CrawlConfig, emitter: Emitter) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if cfg.log_level == "DEBUG" else logging.INFO)
    file_handler = logging.FileHandler(cfg.log_file, encoding="utf-8")
    file_handler.setLevel(cfg.log_level)
    file_handler.setFormatter(logging.Formatter("%(asctime)s [%(name)s] %(levelname)s: %(message)s"))
    root.addHandler(file_handler)
    root.addHandler(EventLogHandler(emitter))


class CrawlProcess:
    def __init__(self, cfg: CrawlConfig, emitter: Emitter) -> None:
        self.cfg = cfg
        self.emitter = emitter
        self.guard = HostGuard(allow_private=cfg.allow_private, host_overrides=cfg.host_overrides)
        self.crawler: Any = None
        self.cancel_requested = False
        self.done_sent = False
        self.error: str | None = None

    def run(self) -> int:
        from scrapy.crawler import CrawlerProcess
        from scrapy.utils.reactor import install_reactor

        install_reactor(ASYNCIO_REACTOR)  # Scrapy's default, installed before anything imports a reactor
        from twisted.internet import reactor

        from .spider import ImageSpider

        process = CrawlerProcess(build_settings(self.cfg, self.guard))
        # After CrawlerProcess: Scrapy's logging setup (dictConfig) would close handlers added before.
        _setup_logging(self.cfg, self.emitter)

        self.reactor = reactor
        self.emitter.emit("started", pid=os.getpid(), start_url=self.cfg.start_url, config=self.cfg.to_dict())
        self.crawler = process.create_crawler(ImageSpider)
        d = process.crawl(self.crawler, config=self.cfg, emitter=self.emitter, guard=self.guard)
        d.addErrback(self._crawl_failed)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)
        if _early_signals:
            reactor.callWhenRunning(self.cancel, signal.Signals(_early_signals[0]).name)
        # The parent closing our stdout means nobody listens any more: stop, like a cancel.
        self.emitter.on_broken = lambda: reactor.callFromThread(self.cancel, "parent went away")
        process.start(install_signal_handlers=False)
        self._send_done()
        return 1 if self.error else 0

    def _crawl_failed(self, failure: Any) -> None:
        self.error = f"{failure.type.__name__}: {failure.value}"
        logger.error("The crawl failed: %s", self.error, exc_info=(failure.type, failure.value, failure.tb))

    def _on_signal(self, signum: int, _frame: Any) -> None:
        # Only hand over to the reactor thread here: a signal handler must not log or write.
        self.reactor.callFromThread(self.cancel, signal.Signals(signum).name)

    def cancel(self, why: str) -> None:
        if self.cancel_requested:
            self._force_finish()
            return
        self.cancel_requested = True
        logger.info("Cancelling the crawl (%s)", why)
        spider = getattr(self.crawler, "spider", None)
        if spider is not None and self.crawler.engine is not None and self.crawler.engine.spider is not None:
            spider.close_crawl("cancelled")
        elif self.reactor.running:
            self.reactor.stop()
        self.reactor.callLater(self.cfg.cancel_grace, self._force_finish)

    def _force_finish(self) -> None:
        """Cancelled but not closed in time (a download in flight): report and leave now."""
        if self.done_sent:
            return
        logger.warning("The crawl did not close within %.1fs of the cancel; exiting", self.cfg.cancel_grace)
        spider = getattr(self.crawler, "spider", None)
        if spider is not None:
            spider.finalize("cancelled")
        self._send_done(forced=True)
        logging.shutdown()
        os._exit(0)

    def _send_done(self, *, forced: bool = False) -> None:
        if self.done_sent:
            return
        self.done_sent = True
        spider = getattr(self.crawler, "spider", None)
        # The spider's own closing reason wins (a cancel may come after the crawl reached a limit).
        reason = getattr(spider, "final_reason", None)
        if reason is None:
            reason = "cancelled" if self.cancel_requested else getattr(spider, "stop_reason", None)
        reason = REASON_ALIASES.get(reason or "", reason)
        if self.error:
            reason = "error"
        reason = reason or "error"
        if spider is not None:
            spider.finalize(reason)
            stats = spider.summary(reason)
            limits = sorted(spider.limits_hit)
        else:
            stats, limits = {}, []
        if reason == "error" and not self.error:
            self.error = "the crawl ended without closing its spider"
        self.emitter.emit("done", reason=reason, limits_hit=limits, stats=stats, error=self.error, forced=forced)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda n, _f: _early_signals.append(n))
    emitter = Emitter(_take_stdout())
    try:
        cfg = CrawlConfig.from_dict(_read_config(argv))
        Path(cfg.work_dir).mkdir(parents=True, exist_ok=True)
        cfg.images_dir.mkdir(parents=True, exist_ok=True)
    except (ConfigError, OSError, ValueError) as exc:
        emitter.emit("done", reason="error", limits_hit=[], stats={}, error=f"invalid configuration: {exc}")
        return 2
    crawl = CrawlProcess(cfg, emitter)
    try:
        return crawl.run()
    except BaseException as exc:  # noqa: BLE001 - the parent must always get a done line
        logger.exception("The crawl process failed")
        crawl.error = f"{type(exc).__name__}: {exc}"
        crawl._send_done()
        return 1


if __name__ == "__main__":
    sys.exit(main())
