"""Host resolution and address checks shared by the safety middleware and the DNS resolver of one crawl.

Pure Python (no Twisted) so it can be tested in-process. One ``HostGuard`` per crawl process; the
middleware checks every request URL with it before anything is sent, and the resolver installed on the
reactor resolves through it again at connection time, keeping only checked addresses. A name that
answers 127.0.0.1 to the check and 10.0.0.1 to the connection (DNS rebinding) is refused by the second.

Test host overrides
-------------------
``host_overrides`` maps host names to answers, so tests can give names to the test site and point
other names at private addresses without touching real DNS:

* ``"name": "10.0.0.1"`` - every lookup answers 10.0.0.1;
* ``"name": "127.0.0.1,10.0.0.1"`` - one answer with two addresses (all are checked, any bad one refuses);
* ``"name": ["127.0.0.1", "10.0.0.1"]`` - successive lookups get successive answers, the last repeats
  (simulates rebinding between the check and the connection).

When overrides are given (even ``{}``) the guard is *closed*: names that are not in it and are not IP
literals fail as unresolvable, and no real DNS query is ever made. Override answers go through exactly
the same address checks as real DNS answers, so overrides can rename but never widen what is reachable.
The job layer passes them only from the test-only setting ``SCRAPE_TEST_HOST_OVERRIDES``, and the runner
accepts them only when ``settings.SCRAPE_ALLOW_PRIVATE`` is on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from scraping.urlsafety import (
    IPAddress,
    UnresolvableHost,
    UnsafeURL,
    check_url,
    parse_ip_literal,
    resolve_checked,
    system_resolve,
)


class HostGuard:
    def __init__(
        self,
        *,
        allow_private: bool = False,
        host_overrides: dict[str, str | list[str]] | None = None,
        system_resolver: Callable[[str], Iterable[str]] = system_resolve,
    ) -> None:
        self.allow_private = allow_private
        self._overrides = (
            None
            if host_overrides is None
            else {h.lower().rstrip("."): (a if isinstance(a, list) else [a]) for h, a in host_overrides.items()}
        )
        self._system_resolver = system_resolver
        self._lock = threading.Lock()
        self._lookups: dict[str, int] = {}
        self.real_lookups = 0
        self.connect_hosts: set[str] = set()
        self.refused_at_connect: dict[str, str] = {}

    def __deepcopy__(self, memo: dict) -> HostGuard:
        # Scrapy deep-copies its settings per crawler; the guard is shared state by design.
        return self

    @property
    def closed_world(self) -> bool:
        return self._overrides is not None

    def needs_network(self, host: str) -> bool:
        """Whether resolving ``host`` would ask the real DNS (callers then do it off the reactor thread)."""
        return self._overrides is None and parse_ip_literal(host) is None

    def resolve(self, host: str) -> list[str]:
        """Address strings for a host name, from the overrides or the system resolver. Not checked."""
        key = host.lower().rstrip(".")
        if self._overrides is not None:
            answers = self._overrides.get(key)
            if answers is None:
                raise UnresolvableHost(f"host {host!r} does not resolve (not in the test host overrides)")
            with self._lock:
                n = self._lookups.get(key, 0)
                self._lookups[key] = n + 1
            answer = answers[min(n, len(answers) - 1)]
            return [a.strip() for a in answer.split(",")]
        with self._lock:
            self.real_lookups += 1
        return list(self._system_resolver(host))

    def check_url(self, url: str) -> None:
        """The request-time check (scheme, credentials, host, every resolved address)."""
        check_url(url, allow_private=self.allow_private, resolve=self.resolve)

    def resolve_for_connect(self, host: str) -> list[IPAddress]:
        """The connection-time resolution: checked addresses only; raises UnsafeURL/UnresolvableHost."""
        with self._lock:
            self.connect_hosts.add(host)
        try:
            return resolve_checked(host, allow_private=self.allow_private, resolve=self.resolve)
        except UnresolvableHost:
            raise
        except UnsafeURL as exc:
            with self._lock:
                self.refused_at_connect[host.lower()] = str(exc)
            raise

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {
                "dns_real_lookups": self.real_lookups,
                "connect_hosts": sorted(self.connect_hosts),
                "refused_at_connect": dict(self.refused_at_connect),
            }
