"""The crawl's configuration: one JSON object, validated here (pure Python, shared by parent and child).

Keys (``start_url`` and ``work_dir`` are required, the rest have defaults):

====================  ========================================================================================
start_url             http(s) URL the crawl starts at (depth 0)
work_dir              directory for downloaded images (``images/``) and the log; created if missing
allowed_domains       domains whose pages are followed (subdomains included); default: the start URL's host
max_pages             page requests made at most (the start page included)
max_images            images saved at most; reaching it ends the crawl with reason "max_images"
depth                 link depth followed from the start page (0: the start page only); images on the
                      deepest pages are still fetched
min_bytes             images smaller than this are reported as skipped "too_small" and not saved
obey_robots           honour robots.txt (ROBOTSTXT_OBEY)
delay                 seconds between requests to one site (DOWNLOAD_DELAY)
autothrottle          adapt the delay to the server's latency (AUTOTHROTTLE_ENABLED)
concurrency           parallel requests (CONCURRENT_REQUESTS and per-domain)
download_timeout      seconds per request (DOWNLOAD_TIMEOUT)
retries               retries of failed requests (RETRY_TIMES)
max_response_bytes    largest response body accepted (DOWNLOAD_MAXSIZE); larger fail as "too_large"
max_image_pixels      larger images fail as "too_many_pixels"
max_seconds           the whole crawl's time limit (CLOSESPIDER_TIMEOUT)
images_any_domain     fetch images from hosts outside allowed_domains (CDNs); every host is still checked
user_agent            User-Agent header (robots.txt rules are matched against it too)
allow_private         loopback (127.0.0.0/8, ::1) may be contacted; for tests. Never private networks.
host_overrides        tests only: {hostname: address}; see ``guard.HostGuard``. When set, the crawl does no
                      real DNS at all: names missing from it fail as "dns".
log_file              log file; default ``<work_dir>/crawl.log``
log_level             level of the log file (DEBUG, INFO, WARNING, ERROR)
cancel_grace          seconds a cancelled crawl may take to close before it is cut short
optout_policy         "respect" (default): images whose page or response carries an AI opt-out (see
                      ``optout``) are reported as skipped "opted_out" and not saved; "ignore": they are
                      saved, with the signals in their ``image_downloaded`` event
====================  ========================================================================================
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from scraping.urlsafety import UnsafeURL, normalise_host

DEFAULT_USER_AGENT = "ImagineerBot/0.1 (+self-hosted dataset builder)"


class ConfigError(ValueError):
    """The crawl configuration is invalid; the message names the key."""


@dataclass(frozen=True)
class CrawlConfig:
    start_url: str
    work_dir: str
    allowed_domains: list[str] = field(default_factory=list)
    max_pages: int = 100
    max_images: int = 1000
    depth: int = 2
    min_bytes: int = 0
    obey_robots: bool = True
    delay: float = 1.0
    autothrottle: bool = True
    concurrency: int = 8
    download_timeout: float = 30.0
    retries: int = 1
    max_response_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 100_000_000
    max_seconds: float = 3600.0
    images_any_domain: bool = True
    user_agent: str = DEFAULT_USER_AGENT
    allow_private: bool = False
    host_overrides: dict[str, str | list[str]] | None = None
    log_file: str = ""
    log_level: str = "INFO"
    cancel_grace: float = 2.0
    optout_policy: str = "respect"

    @property
    def start_host(self) -> str:
        return normalise_host(self.start_url)[1]

    @property
    def images_dir(self) -> Path:
        return Path(self.work_dir) / "images"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Any) -> CrawlConfig:
        if not isinstance(raw, dict):
            raise ConfigError("the configuration must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(unknown)}")
        for required in ("start_url", "work_dir"):
            if not raw.get(required):
                raise ConfigError(f"{required} is required")
        values = {k: v for k, v in raw.items() if v is not None}
        out: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in values:
                continue
            out[f.name] = _coerce(f.name, values[f.name])
        try:
            _scheme, host = normalise_host(out["start_url"])
        except UnsafeURL as exc:
            raise ConfigError(f"start_url: {exc}") from None
        if not out.get("allowed_domains"):
            out["allowed_domains"] = [host]
        if not out.get("log_file"):
            out["log_file"] = str(Path(out["work_dir"]) / "crawl.log")
        return cls(**out)


_INTS = {
    "max_pages": 1,
    "max_images": 1,
    "depth": 0,
    "min_bytes": 0,
    "concurrency": 1,
    "retries": 0,
    "max_response_bytes": 1024,
    "max_image_pixels": 1,
}
_FLOATS = {"delay": 0.0, "download_timeout": 0.1, "max_seconds": 1.0, "cancel_grace": 0.0}
_BOOLS = {"obey_robots", "autothrottle", "images_any_domain", "allow_private"}
_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR"}


def _coerce(name: str, value: Any) -> Any:
    if name in _INTS:
        if isinstance(value, bool) or not isinstance(value, int) or value < _INTS[name]:
            raise ConfigError(f"{name} must be an integer >= {_INTS[name]}")
        return value
    if name in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{name} must be a number")
        if value < _FLOATS[name]:
            raise ConfigError(f"{name} must be >= {_FLOATS[name]}")
        return float(value)
    if name in _BOOLS:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false")
        return value
    if name in ("start_url", "work_dir", "user_agent", "log_file"):
        if not isinstance(value, str) or "\n" in value or "\r" in value:
            raise ConfigError(f"{name} must be a single-line string")
        return value
    if name == "optout_policy":
        if value not in ("respect", "ignore"):
            raise ConfigError("optout_policy must be respect or ignore")
        return value
    if name == "log_level":
        if not isinstance(value, str) or value.upper() not in _LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(sorted(_LEVELS))}")
        return value.upper()
    if name == "allowed_domains":
        if not isinstance(value, list) or not all(isinstance(d, str) and d for d in value):
            raise ConfigError("allowed_domains must be a list of domain names")
        domains = []
        for d in value:
            try:
                domains.append(normalise_host(f"http://{d.strip().strip('.')}/")[1])
            except UnsafeURL:
                raise ConfigError(f"allowed_domains: {d!r} is not a domain name") from None
        return domains
    if name == "host_overrides":
        return _coerce_overrides(value)
    raise ConfigError(f"unknown configuration key {name}")  # pragma: no cover


def _coerce_overrides(value: Any) -> dict[str, str | list[str]]:
    if not isinstance(value, dict):
        raise ConfigError("host_overrides must be an object {hostname: address or list of answers}")
    out: dict[str, str | list[str]] = {}
    for host, answer in value.items():
        if not isinstance(host, str) or not host:
            raise ConfigError("host_overrides: host names must be strings")
        answers = answer if isinstance(answer, list) else [answer]
        if not answers:
            raise ConfigError(f"host_overrides[{host!r}]: empty list")
        for one in answers:
            if not isinstance(one, str):
                raise ConfigError(f"host_overrides[{host!r}]: answers must be strings")
            for addr in one.split(","):
                try:
                    ipaddress.ip_address(addr.strip())
                except ValueError:
                    raise ConfigError(f"host_overrides[{host!r}]: {addr!r} is not an IP address") from None
        out[host.lower().rstrip(".")] = answer
    return out
