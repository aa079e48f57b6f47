"""check_url: schemes, hosts, every class of non-public address, literal spellings; no real DNS."""

from __future__ import annotations

import pytest

from scraping.urlsafety import UnresolvableHost, UnsafeURL, check_url, parse_ip_literal

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"


def resolver(table: dict[str, list[str]]):
    calls: list[str] = []

    def resolve(host: str) -> list[str]:
        calls.append(host)
        if host not in table:
            raise UnresolvableHost(f"host {host!r} does not resolve")
        return table[host]

    resolve.calls = calls
    return resolve


def refused(url: str, table: dict[str, list[str]] | None = None, **kwargs) -> str:
    with pytest.raises(UnsafeURL) as info:
        check_url(url, resolve=resolver(table or {}), allow_private=kwargs.pop("allow_private", False), **kwargs)
    return str(info.value)


def test_it_accepts_public_hosts_and_addresses():
    resolve = resolver({"example.com": [PUBLIC_V4, PUBLIC_V6]})
    check_url("http://example.com/a.jpg", resolve=resolve, allow_private=False)
    check_url("https://example.com:8443/x?y=1#z", resolve=resolve, allow_private=False)
    check_url(f"http://{PUBLIC_V4}/", resolve=resolve, allow_private=False)
    check_url(f"http://[{PUBLIC_V6}]:8080/", resolve=resolve, allow_private=False)
    check_url("HTTP://EXAMPLE.COM/", resolve=resolve, allow_private=False)
    assert resolve.calls == ["example.com", "example.com", "example.com"]  # literals need no lookup


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("file:///etc/passwd", "scheme 'file' is not allowed"),
        ("data:image/png;base64,AAAA", "scheme 'data' is not allowed"),
        ("ftp://example.com/x", "scheme 'ftp' is not allowed"),
        ("javascript:alert(1)", "scheme 'javascript' is not allowed"),
        ("gopher://example.com:70/", "scheme 'gopher' is not allowed"),
        ("dict://example.com:11211/", "scheme 'dict' is not allowed"),
        ("example.com/a.jpg", "no scheme"),
        ("//example.com/a.jpg", "no scheme"),
        ("", "empty"),
        ("http://", "no host"),
        ("http:///path", "no host"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://example.com@127.0.0.1/", "credentials"),
        ("http://example.com:99999/", "cannot be parsed"),
        ("http://exa mple.com/", "whitespace"),
        ("http://example.com\\@127.0.0.1/", "credentials"),
        ("http://example.com\x00.evil/", "control characters"),
        ("http://[not-an-ip]/", "cannot be parsed"),
    ],
)
def test_it_refuses_bad_schemes_and_malformed_urls(url, needle):
    assert needle in refused(url, {"example.com": [PUBLIC_V4]})


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("10.0.0.5", "private"),
        ("172.16.3.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "CGNAT"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.10", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("fe80::1", "link-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::10.0.0.1", "IPv4-compatible"),
        ("2002:a00:1::1", "private"),  # 6to4 around 10.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 around 169.254.169.254
        ("2001:db8::1", "documentation"),
        ("2001::1", "reserved"),  # Teredo
    ],
)
def test_it_refuses_every_class_of_non_public_address(address, kind):
    message = refused("http://victim.example/", {"victim.example": [address]})
    assert kind in message
    assert "victim.example" in message and "resolves to" in message


def test_the_message_says_which_address():
    assert refused("http://intranet.example/", {"intranet.example": ["10.0.0.5"]}) == (
        "host 'intranet.example' resolves to a private address 10.0.0.5"
    )
    assert "::ffff:10.0.0.1 (embedding IPv4 10.0.0.1)" in refused(
        "http://m.example/", {"m.example": ["::ffff:10.0.0.1"]}
    )


def test_one_bad_address_among_good_ones_refuses():
    message = refused("http://mixed.example/", {"mixed.example": [PUBLIC_V4, "10.1.2.3", PUBLIC_V6]})
    assert "10.1.2.3" in message


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://127.0.0.1/", "127.0.0.1"),
        ("http://2130706433/", "127.0.0.1"),  # decimal
        ("http://0x7f000001/", "127.0.0.1"),  # hex
        ("http://0x7f.1/", "127.0.0.1"),  # hex, short form
        ("http://0177.0.0.1/", "127.0.0.1"),  # octal
        ("http://017700000001/", "127.0.0.1"),  # octal, one part
        ("http://127.1/", "127.0.0.1"),  # short form
        ("http://0x0a.0.0.1/", "10.0.0.1"),
        ("http://167772161:8080/", "10.0.0.1"),
        ("http://0xA9FEA9FE/latest/meta-data/", "169.254.169.254"),
        ("http://0/", "0.0.0.0"),
        ("http://[::1]/", "::1"),
        ("http://[::ffff:7f00:1]/", "::ffff:127.0.0.1"),
        ("http://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254"),
        ("http://[fe80::1%25eth0]/", "fe80::1"),
        ("http://127.0.0.1./", "127.0.0.1"),
    ],
)
def test_it_catches_ip_literals_in_every_spelling_without_asking_the_resolver(url, address):
    resolve = resolver({})
    with pytest.raises(UnsafeURL) as info:
        check_url(url, resolve=resolve, allow_private=False)
    assert address in str(info.value)
    assert resolve.calls == []


def test_parse_ip_literal_follows_inet_aton():
    assert str(parse_ip_literal("2130706433")) == "127.0.0.1"
    assert str(parse_ip_literal("0x7f.0.1")) == "127.0.0.1"
    assert str(parse_ip_literal("10.1")) == "10.0.0.1"
    assert parse_ip_literal("example.com") is None
    assert parse_ip_literal("1.2.3.4.5") is None
    assert parse_ip_literal("256.1.1.1") is None
    assert parse_ip_literal("08.1.1.1") is None  # not octal, not decimal: a name for the resolver
    assert parse_ip_literal("cafe.be") is None


def test_unresolvable_hosts_raise_the_dns_subclass():
    with pytest.raises(UnresolvableHost):
        check_url("http://nowhere.example/", resolve=resolver({}), allow_private=False)
    with pytest.raises(UnresolvableHost):
        check_url("http://empty.example/", resolve=resolver({"empty.example": []}), allow_private=False)


def test_allow_private_admits_loopback_only():
    resolve = resolver({"localhost": ["127.0.0.1", "::1"], "intranet": ["10.0.0.1"], "meta": ["169.254.169.254"]})
    check_url("http://127.0.0.1:8000/", resolve=resolve, allow_private=True)
    check_url("http://localhost/", resolve=resolve, allow_private=True)
    check_url("http://[::1]/", resolve=resolve, allow_private=True)
    check_url("http://[::ffff:127.0.0.1]/", resolve=resolve, allow_private=True)
    check_url("http://2130706433/", resolve=resolve, allow_private=True)
    for url in ("http://intranet/", "http://meta/", "http://10.0.0.1/", "http://[fd00::1]/", "http://0.0.0.0/"):
        with pytest.raises(UnsafeURL):
            check_url(url, resolve=resolve, allow_private=True)
    with pytest.raises(UnsafeURL, match="scheme 'file'"):
        check_url("file:///etc/passwd", resolve=resolve, allow_private=True)


def test_allow_private_defaults_to_the_setting(settings):
    resolve = resolver({})
    settings.SCRAPE_ALLOW_PRIVATE = False
    with pytest.raises(UnsafeURL, match="loopback"):
        check_url("http://127.0.0.1/", resolve=resolve)
    settings.SCRAPE_ALLOW_PRIVATE = True
    check_url("http://127.0.0.1/", resolve=resolve)
    with pytest.raises(UnsafeURL, match="private"):
        check_url("http://10.0.0.1/", resolve=resolve)


def test_international_names_are_resolved_in_their_ascii_form():
    resolve = resolver({"xn--bcher-kva.example": [PUBLIC_V4]})
    check_url("http://bücher.example/", resolve=resolve, allow_private=False)
    assert resolve.calls == ["xn--bcher-kva.example"]


def test_the_default_resolver_is_the_system_one(monkeypatch):
    import socket

    asked = []

    def fake_getaddrinfo(host, *args, **kwargs):
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.9.8.7", 0))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(UnsafeURL, match="10.9.8.7"):
        check_url("http://somewhere.example/", allow_private=False)
    assert asked == ["somewhere.example"]
