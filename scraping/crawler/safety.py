"""SSRF protection inside the crawl: a downloader middleware and the reactor's DNS resolver.

* ``SafetyMiddleware`` runs first among the downloader middlewares (priority 1, before robots.txt and
  offsite) and checks every request's URL: start requests, links, images, the robots.txt requests the
  robots middleware makes, and every redirect hop (the redirect middleware hands a new Request back to
  the engine, which sends it through the whole chain again), all before anything is sent.
* ``GuardedResolver`` replaces the reactor's name resolver (``TWISTED_DNS_RESOLVER``). Twisted's
  ``HostnameEndpoint``, which the HTTP/1.1 handler connects through, asks it for every connection, IP
  literals included; it resolves again and hands over only addresses that pass the same checks, so an
  answer that changes between the check and the connection cannot be used.

Both use the crawl's ``HostGuard`` (guard.py), found under the ``IMAGINEER_GUARD`` setting.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.httpobj import urlparse_cached
from twisted.internet import threads
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IHostnameResolver, IHostResolution, IResolutionReceiver
from zope.interface import implementer

from scraping.urlsafety import UnresolvableHost, UnsafeURL

if TYPE_CHECKING:
    from scrapy import Request
    from scrapy.crawler import Crawler

    from .guard import HostGuard

logger = logging.getLogger("scraping.crawler.safety")

GUARD_SETTING = "IMAGINEER_GUARD"


class UnsafeRequest(IgnoreRequest):
    """The request's URL or address is not allowed; the message says why."""


class UnresolvableRequest(IgnoreRequest):
    """The request's host has no address."""


def _guard(settings: Any) -> HostGuard:
    guard = settings.get(GUARD_SETTING)
    if guard is None:
        raise NotConfigured(f"{GUARD_SETTING} is not set: refusing to crawl without the host guard")
    return guard


class SafetyMiddleware:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.guard = _guard(crawler.settings)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> SafetyMiddleware:
        return cls(crawler)

    async def process_request(self, request: Request) -> None:
        host = urlparse_cached(request).hostname or ""
        try:
            if self.guard.needs_network(host):
                # Real DNS blocks; keep it off the reactor thread.
                await maybe_deferred_to_future(threads.deferToThread(self.guard.check_url, request.url))
            else:
                self.guard.check_url(request.url)
        except UnresolvableHost as exc:
            self.crawler.stats.inc_value("imagineer/dns_failed")
            raise UnresolvableRequest(str(exc)) from None
        except UnsafeURL as exc:
            self.crawler.stats.inc_value("imagineer/refused_unsafe")
            logger.warning("Refused %s: %s", request.url, exc)
            raise UnsafeRequest(str(exc)) from None
        return None


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class GuardedResolver:
    """An IHostnameResolver that yields only addresses the guard allows (none: the connection fails)."""

    def __init__(self, reactor: Any, guard: HostGuard) -> None:
        self.reactor = reactor
        self.guard = guard

    @classmethod
    def from_crawler(cls, crawler: Any, reactor: Any) -> GuardedResolver:
        return cls(reactor, _guard(crawler.settings))

    def install_on_reactor(self) -> None:
        self.reactor.installNameResolver(self)

    def resolveHostName(  # noqa: N802 (Twisted interface)
        self,
        resolutionReceiver: IResolutionReceiver,  # noqa: N803
        hostName: str,  # noqa: N803
        portNumber: int = 0,  # noqa: N803
        addressTypes: Any = None,  # noqa: N803
        transportSemantics: str = "TCP",  # noqa: N803
    ) -> IHostResolution:
        host = hostName.decode("ascii") if isinstance(hostName, bytes) else hostName
        resolution = _Resolution(host)
        resolutionReceiver.resolutionBegan(resolution)

        def deliver(addresses: list) -> None:
            for addr in addresses:
                if addr.version == 6:
                    if addressTypes is None or IPv6Address in addressTypes:
                        resolutionReceiver.addressResolved(IPv6Address("TCP", str(addr), portNumber))
                elif addressTypes is None or IPv4Address in addressTypes:
                    resolutionReceiver.addressResolved(IPv4Address("TCP", str(addr), portNumber))
            resolutionReceiver.resolutionComplete()

        def refuse(exc: BaseException) -> None:
            if isinstance(exc, UnsafeURL) and not isinstance(exc, UnresolvableHost):
                logger.warning("Refused to connect to %s: %s", host, exc)
            resolutionReceiver.resolutionComplete()  # no addresses: the endpoint fails with DNSLookupError

        if self.guard.needs_network(host):
            d = threads.deferToThreadPool(
                self.reactor, self.reactor.getThreadPool(), self.guard.resolve_for_connect, host
            )
            d.addCallbacks(deliver, lambda failure: refuse(failure.value))
        else:
            try:
                addresses = self.guard.resolve_for_connect(host)
            except Exception as exc:  # noqa: BLE001 - any failure means no address
                refuse(exc)
            else:
                deliver(addresses)
        return resolution
