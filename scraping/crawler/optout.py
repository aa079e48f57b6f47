"""Publishers' machine-readable opt-outs from AI training, and licence hints (pure Python, no Scrapy).

Signals read here, each reported as ``{"signal", "value", "where", "url"}``:

- ``x-robots-tag``: the ``X-Robots-Tag`` header with ``noai``, ``noimageai``, ``noindex``, ``noimageindex``
  (or ``none``, which means noindex). A value scoped to a user agent (``otherbot: noai``) applies only when
  the agent is our bot's product token or ``*``; other bots' rules are not ours.
- ``meta-robots``: ``<meta name="robots">`` (or ``<meta name="<our token>">``) with the same values.
- ``tdm-reservation`` / ``tdm-policy``: the TDMRep HTTP headers. ``tdm-reservation: 1`` reserves TDM rights;
  a ``tdm-policy`` without ``tdm-reservation: 0`` is read as a reservation too (the policy says on what terms).
- ``meta-tdm-reservation``: ``<meta name="tdm-reservation" content="1">`` (and ``tdm-policy`` beside it).
- ``tdmrep.json``: the rule of ``/.well-known/tdmrep.json`` (a JSON array of ``{"location", "tdm-reservation",
  "tdm-policy"}``) that matches the URL's path; locations use robots.txt patterns (``*`` any characters, ``$``
  the end) and the first rule that matches wins.

``where`` is "page" (the page the image was found on) or "image" (the image's own response).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import unquote, urlsplit

OPTOUT_DIRECTIVES = frozenset({"noai", "noimageai", "noindex", "noimageindex"})
# Directives whose own syntax is "name: value"; anything else before a colon names a user agent.
_VALUED_DIRECTIVES = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})
POLICIES = ("respect", "ignore")
MAX_TDMREP_RULES = 1000
MAX_TDMREP_BYTES = 512 * 1024


def bot_token(user_agent: str) -> str:
    """The product token robots rules name us by: ``ImagineerBot/0.1 (...)`` -> ``imagineerbot``."""
    first = (user_agent or "").strip().split(" ", 1)[0]
    return first.split("/", 1)[0].lower()


def _signal(signal: str, value: str, where: str, url: str) -> dict[str, str]:
    return {"signal": signal, "value": value[:300], "where": where, "url": url[:2000]}


def robots_directives(value: str, *, token: str) -> set[str]:
    """The opt-out directives one robots value gives us (header value or meta content).

    ``agent: directive`` starts a group for that user agent, which runs until the next agent (a proxy may
    have joined several header lines into one): ``otherbot: noai, imagineerbot: noimageai`` gives noimageai.
    """
    found: set[str] = set()
    scope: str | None = None
    for part in value.split(","):
        match = re.match(r"^\s*([A-Za-z0-9_.*-]+)\s*:(.*)$", part)
        if match and match.group(1).lower() not in _VALUED_DIRECTIVES:
            scope, part = match.group(1).lower(), match.group(2)
        word = part.strip().lower()
        if word == "none":
            word = "noindex"
        if word in OPTOUT_DIRECTIVES and scope in (None, token, "*"):
            found.add(word)
    return found


def x_robots_signals(values: list[str], *, token: str, where: str, url: str) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for value in values:
        for directive in sorted(robots_directives(value, token=token)):
            out.append(_signal("x-robots-tag", directive, where, url))
    return out


def meta_robots_signals(metas: list[tuple[str, str]], *, token: str, url: str) -> list[dict[str, str]]:
    """From ``(name, content)`` pairs of a page's meta tags."""
    out: list[dict[str, str]] = []
    for name, content in metas:
        if name.strip().lower() in ("robots", token):
            for directive in sorted(robots_directives(content, token=token)):
                out.append(_signal("meta-robots", directive, "page", url))
    return out


def _tdm_pair(reservation: str | None, policy: str | None) -> tuple[bool, str]:
    """(reserved, why) from TDMRep reservation/policy values as strings (None when absent)."""
    reservation = (reservation or "").strip() if reservation is not None else None
    policy = (policy or "").strip() or None
    if reservation == "1":
        return True, "1"
    if reservation == "0":
        return False, "0"
    if policy:
        return True, policy
    return False, ""


def tdm_header_signals(reservation: str | None, policy: str | None, *, where: str, url: str) -> list[dict[str, str]]:
    reserved, _why = _tdm_pair(reservation, policy)
    if not reserved:
        return []
    out = []
    if reservation is not None and reservation.strip() == "1":
        out.append(_signal("tdm-reservation", "1", where, url))
    if policy and policy.strip():
        out.append(_signal("tdm-policy", policy.strip(), where, url))
    return out


def tdm_meta_signals(metas: list[tuple[str, str]], *, url: str) -> list[dict[str, str]]:
    values = {name.strip().lower(): content for name, content in metas}
    reservation, policy = values.get("tdm-reservation"), values.get("tdm-policy")
    reserved, _why = _tdm_pair(reservation, policy)
    if not reserved:
        return []
    out = []
    if reservation is not None and reservation.strip() == "1":
        out.append(_signal("meta-tdm-reservation", "1", "page", url))
    if policy and policy.strip():
        out.append(_signal("meta-tdm-policy", policy.strip(), "page", url))
    return out


# -- /.well-known/tdmrep.json -------------------------------------------------------------------------------


def _pattern(location: str) -> re.Pattern[str]:
    """A robots.txt path pattern as a regex anchored at the start: ``*`` any characters, a final ``$`` the end."""
    anchored = location.endswith("$")
    body = location[:-1] if anchored else location
    regex = ".*".join(re.escape(part) for part in body.split("*"))
    return re.compile(regex + ("$" if anchored else ""), re.DOTALL)


class TdmRepRules:
    """The rules of one origin's tdmrep.json; ``match(url)`` gives the first rule covering the URL's path."""

    def __init__(self, rules: list[tuple[str, re.Pattern[str], bool, str]]) -> None:
        self.rules = rules

    @classmethod
    def parse(cls, body: bytes) -> TdmRepRules:
        """Rules from the file's bytes; anything that is not the spec's shape gives no rules (the
        spec: a server that does not provide a valid representation does not implement the protocol)."""
        if len(body) > MAX_TDMREP_BYTES:
            return cls([])
        try:
            data = json.loads(body.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError):
            return cls([])
        if not isinstance(data, list):
            return cls([])
        rules = []
        for entry in data[:MAX_TDMREP_RULES]:
            if not isinstance(entry, dict) or not isinstance(entry.get("location"), str):
                continue
            location = entry["location"].strip()
            if not location:
                continue
            if not location.startswith("/") and not location.startswith("*"):
                location = "/" + location
            raw_reservation = entry.get("tdm-reservation")
            reservation = None if raw_reservation is None else str(raw_reservation).strip()
            policy = entry.get("tdm-policy")
            policy = policy.strip() if isinstance(policy, str) else None
            reserved, _why = _tdm_pair(reservation, policy)
            rules.append((location, _pattern(location), reserved, policy or ""))
        return cls(rules)

    def match(self, url: str) -> dict[str, Any] | None:
        parts = urlsplit(url)
        path = unquote(parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for location, pattern, reserved, policy in self.rules:
            if pattern.match(path):
                return {"location": location, "reserved": reserved, "policy": policy}
        return None


def tdmrep_signals(rule: dict[str, Any] | None, *, where: str, url: str) -> list[dict[str, str]]:
    if not rule or not rule.get("reserved"):
        return []
    value = f"location {rule['location']}" + (f", policy {rule['policy']}" if rule.get("policy") else "")
    return [_signal("tdmrep.json", value, where, url)]


def describe(signals: list[dict[str, str]]) -> str:
    """One line for a person: ``x-robots-tag noai on the image; tdm-reservation 1 on the page``."""
    parts = []
    for s in signals:
        parts.append(f"{s.get('signal')} {s.get('value')} on the {s.get('where')}")
    return "; ".join(dict.fromkeys(parts))
