"""Is this URL safe for the scraper to fetch? Pure Python, imported by the web process to validate forms.

The scraper must never become a way to reach the machine it runs on or its network (SSRF): only http(s),
and every address the host resolves to must be public. The same rules run again inside the crawl process
on every request, every redirect hop and at connection time (scraping/crawler/), so a check here in a form
is a courtesy to the user, not the protection itself.

``allow_private`` is the test switch (``settings.SCRAPE_ALLOW_PRIVATE``). It lets through *loopback only*
(127.0.0.0/8, ::1 and their mapped forms), never RFC 1918, link-local, metadata or unique-local
addresses: tests need to crawl a site on 127.0.0.1, nothing else, and a test that maps a hostname to
10.0.0.1 must still see it refused.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

__all__ = [
    "UnsafeURL",
    "UnresolvableHost",
    "check_url",
    "check_address",
    "parse_ip_literal",
    "system_resolve",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Iterable[str]]

ALLOWED_SCHEMES = frozenset({"http", "https"})

# Hostname characters after IDNA encoding; anything else (spaces, %, \, ...) is refused rather than
# handed to a resolver that might read it differently (glibc inet_aton stops at a space: "127.1 x").
_HOST_RE = re.compile(r"^[a-z0-9_.-]+$")

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network
# Python 3.11's is_global predates the 2024 fixes (it calls multicast, 64:ff9b::/96 and ::a.b.c.d global),
# so the classification is spelled out here. First match names the reason.
_V4_BLOCKS: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "unspecified"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("100.64.0.0/10"), "shared (CGNAT)"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.0.0.0/24"), "reserved"),
    (_V4("192.0.2.0/24"), "reserved (documentation)"),
    (_V4("192.88.99.0/24"), "reserved (6to4 relay)"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("198.18.0.0/15"), "reserved (benchmarking)"),
    (_V4("198.51.100.0/24"), "reserved (documentation)"),
    (_V4("203.0.113.0/24"), "reserved (documentation)"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("240.0.0.0/4"), "reserved"),
)
_V6_BLOCKS: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("::/96"), "reserved (IPv4-compatible)"),
    (_V6("64:ff9b:1::/48"), "reserved (local NAT64)"),
    (_V6("100::/64"), "reserved (discard)"),
    (_V6("2001::/23"), "reserved (IETF protocol assignments)"),
    (_V6("2001:db8::/32"), "reserved (documentation)"),
    (_V6("3fff::/20"), "reserved (documentation)"),
    (_V6("5f00::/16"), "reserved (SRv6)"),
    (_V6("fc00::/7"), "unique-local"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local"),
    (_V6("ff00::/8"), "multicast"),
)
_NAT64 = _V6("64:ff9b::/96")
_LOOPBACK_V4 = _V4("127.0.0.0/8")


class UnsafeURL(ValueError):
    """The URL must not be fetched; the message says why, for a form error or a crawl event."""


class UnresolvableHost(UnsafeURL):
    """The host has no address (DNS failure). Not an attack, but nothing to fetch either."""


def system_resolve(host: str) -> list[str]:
    """Every address the system resolver gives for ``host`` (the default ``resolve`` of ``check_url``)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableHost(f"host {host!r} does not resolve ({exc})") from None
    # An IPv6 link-local answer may carry a zone ("fe80::1%eth0"); the address is what we judge.
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


def _parse_inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """IPv4 in the loose forms inet_aton accepts: 2130706433, 0x7f.1, 0177.0.0.1, 127.1."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        try:
            if part[:2] in ("0x", "0X"):
                values.append(int(part[2:], 16))
            elif len(part) > 1 and part[0] == "0":
                values.append(int(part[1:], 8))
            else:
                if not part.isdigit():
                    return None
                values.append(int(part, 10))
        except ValueError:
            return None
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = 0
    for v in head:
        number = number * 256 + v
    number = number * 256 ** (4 - len(head)) + last
    return ipaddress.IPv4Address(number)


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells if it is an IP literal in any form a resolver would accept, else None."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if "%" in host:  # scoped IPv6 literal, fe80::1%eth0
        try:
            return ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return None
    if host and host[-1] == ".":
        host = host[:-1]
    if host and all(c in "0123456789abcdefxABCDEFX." for c in host):
        return _parse_inet_aton(host)
    return None


def _embedded_v4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if addr.ipv4_mapped is not None:  # ::ffff:a.b.c.d
        return addr.ipv4_mapped
    if addr.sixtofour is not None:  # 2002:AABB:CCDD::/48
        return addr.sixtofour
    if addr in _NAT64:  # 64:ff9b::a.b.c.d
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def address_problem(addr: IPAddress | str, *, allow_private: bool = False) -> str | None:
    """Why ``addr`` must not be contacted ("private", "loopback", ...), or None when it may be.

    An IPv6 address that embeds an IPv4 one (mapped, 6to4, NAT64) is judged by the IPv4 address.
    """
    if isinstance(addr, str):
        addr = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address):
        v4 = _embedded_v4(addr)
        if v4 is not None:
            return address_problem(v4, allow_private=allow_private)
        if addr == ipaddress.IPv6Address("::1") and allow_private:
            return None
        for net, why in _V6_BLOCKS:
            if addr in net:
                return why
        if not addr.is_global:
            return "non-global"
        return None
    if allow_private and addr in _LOOPBACK_V4:
        return None
    for net, why in _V4_BLOCKS:
        if addr in net:
            return why
    if addr == ipaddress.IPv4Address("255.255.255.255") or not addr.is_global:
        return "non-global"
    return None


def check_address(addr: IPAddress | str, *, allow_private: bool = False, host: str | None = None) -> None:
    """Raise UnsafeURL when ``addr`` is not public (or, with allow_private, not public and not loopback)."""
    if isinstance(addr, str):
        addr = ipaddress.ip_address(addr.split("%", 1)[0])
    problem = address_problem(addr, allow_private=allow_private)
    if problem:
        subject = f"host {host!r} resolves to" if host and host != str(addr) else "the host is"
        inner = _embedded_v4(addr) if isinstance(addr, ipaddress.IPv6Address) else None
        detail = f" (embedding IPv4 {inner})" if inner is not None else ""
        raise UnsafeURL(f"{subject} a {problem} address {_show(addr)}{detail}")


def _show(addr: IPAddress) -> str:
    """An address as people write it: ::ffff:10.0.0.1 rather than Python 3.11's ::ffff:a00:1."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return f"::ffff:{addr.ipv4_mapped}"
    return str(addr)


def _allow_private_setting() -> bool:
    try:
        from django.conf import settings

        if not settings.configured:
            return False
        return bool(getattr(settings, "SCRAPE_ALLOW_PRIVATE", False))
    except Exception:  # Django missing or misconfigured: the safe answer
        return False


def normalise_host(url: str) -> tuple[str, str]:
    """(scheme, hostname) of a URL that passes the syntactic rules; raise UnsafeURL otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise UnsafeURL("the URL is empty")
    url = url.strip()
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise UnsafeURL("the URL contains control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise UnsafeURL(f"the URL cannot be parsed ({exc})") from None
    scheme = parts.scheme.lower()
    if not scheme:
        raise UnsafeURL("the URL has no scheme (it must start with http:// or https://)")
    if scheme not in ALLOWED_SCHEMES:
        raise UnsafeURL(f"scheme {scheme!r} is not allowed (only http and https)")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL("credentials in the URL are not allowed")
    if any(c.isspace() or c == "\\" for c in parts.netloc):
        raise UnsafeURL("the host part contains whitespace or a backslash")
    if port == 0:
        raise UnsafeURL("port 0 is not allowed")
    host = parts.hostname or ""
    if not host:
        raise UnsafeURL("the URL has no host name")
    if "[" in parts.netloc or ":" in host:
        literal = parse_ip_literal(host)
        if not isinstance(literal, ipaddress.IPv6Address):
            raise UnsafeURL(f"host {host!r} is not a valid IPv6 address")
        return scheme, str(literal)
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise UnsafeURL(f"host {host!r} is not a valid international domain name") from None
    ascii_host = ascii_host.lower()
    if len(ascii_host) > 253 or not _HOST_RE.match(ascii_host) or ".." in ascii_host:
        raise UnsafeURL(f"host {host!r} is not a valid host name")
    return scheme, ascii_host


def resolve_checked(host: str, *, allow_private: bool, resolve: Resolver | None = None) -> list[IPAddress]:
    """The addresses of ``host``, all of them checked; raise UnsafeURL if any is not allowed.

    An IP literal (in any spelling) is judged as it is, without asking the resolver.
    """
    literal = parse_ip_literal(host)
    if literal is not None:
        check_address(literal, allow_private=allow_private)
        return [literal]
    answers = list((resolve or system_resolve)(host))
    if not answers:
        raise UnresolvableHost(f"host {host!r} has no address")
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            addr = ipaddress.ip_address(str(answer).split("%", 1)[0])
        except ValueError:
            raise UnsafeURL(f"host {host!r} resolved to something that is not an address: {answer!r}") from None
        # Every answer must pass: a resolver may hand the connector any of them.
        check_address(addr, allow_private=allow_private, host=host)
        addresses.append(addr)
    return addresses


def check_url(url: str, *, allow_private: bool | None = None, resolve: Resolver | None = None) -> None:
    """Raise UnsafeURL (or its subclass UnresolvableHost) unless ``url`` is safe to fetch now.

    ``resolve(host) -> iterable of address strings`` defaults to the system resolver (socket.getaddrinfo);
    tests pass their own so that no lookup leaves the machine. ``allow_private=None`` reads
    ``settings.SCRAPE_ALLOW_PRIVATE`` (False when Django is not configured); True admits loopback only.
    """
    if allow_private is None:
        allow_private = _allow_private_setting()
    _scheme, host = normalise_host(url)
    resolve_checked(host, allow_private=allow_private, resolve=resolve)
