"""Image provenance: licence hints from a file's XMP, IPTC and EXIF metadata and from a page's markup,
normalised to one licence, and the record kept per image (``ImageProvenance``).

Readers never fail an import: metadata that does not parse gives no hints. ``provenance_record`` is
called by ``gallery.services.image_ingest`` for every new image (uploads too); scrapes pass what the crawl
knew (fetch time, opt-out signals, the page's licence links).
"""

from __future__ import annotations

import io
import logging
import re
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .models import Image, ImageProvenance, OptOutStatus

logger = logging.getLogger(__name__)

MAX_XMP_BYTES = 1024 * 1024
MAX_HINT = 500
XMP_START, XMP_END = b"<x:xmpmeta", b"</x:xmpmeta>"
NS = {
    "dc": "http://purl.org/dc/elements/1.1/",
    "xmpRights": "http://ns.adobe.com/xap/1.0/rights/",
    "cc": "http://creativecommons.org/ns#",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
    "plus": "http://ns.useplus.org/ldf/xmp/1.0/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
}
# (namespace prefix, local name) -> hint kind
XMP_FIELDS = {
    ("dc", "rights"): "copyright",
    ("dc", "creator"): "artist",
    ("xmpRights", "WebStatement"): "licence",
    ("xmpRights", "UsageTerms"): "licence",
    ("cc", "license"): "licence",
    ("cc", "attributionName"): "artist",
    ("photoshop", "Credit"): "artist",
    ("plus", "Licensor"): "licence",
}
EXIF_ARTIST, EXIF_COPYRIGHT = 0x013B, 0x8298
IPTC_FIELDS = {(2, 116): "copyright", (2, 80): "artist", (2, 110): "artist"}
CC_RE = re.compile(r"creativecommons\.org/(licenses|publicdomain)/([a-z-]+)/(\d+(?:\.\d+)?)?", re.IGNORECASE)


def licence_name(value: str) -> str:
    """A short name for a Creative Commons URL ("CC BY-SA 4.0", "CC0 1.0"), else the value itself."""
    match = CC_RE.search(value or "")
    if not match:
        return (value or "").strip()[:300]
    kind, code, version = match.group(1).lower(), match.group(2).lower(), match.group(3) or ""
    if kind == "publicdomain":
        name = "CC0" if code == "zero" else "Public Domain Mark" if code == "mark" else f"CC {code}"
    else:
        name = "CC " + code.upper()
    return f"{name} {version}".strip()


def _clean(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value or "").replace("\x00", " ").split())[:MAX_HINT]


# -- the file's metadata ------------------------------------------------------------------------------------


def _xmp_packet(data: bytes) -> bytes | None:
    start = data.find(XMP_START)
    if start < 0:
        return None
    end = data.find(XMP_END, start)
    if end < 0 or end - start > MAX_XMP_BYTES:
        return None
    return data[start:end + len(XMP_END)]


def _xmp_hints(data: bytes) -> list[dict[str, str]]:
    packet = _xmp_packet(data)
    if packet is None:
        return []
    from defusedxml import ElementTree  # no entity expansion from a file we were sent

    try:
        root = ElementTree.fromstring(packet)
    except Exception:  # noqa: BLE001 - a broken packet gives no hints
        return []
    hints = []
    rdf_resource = f"{{{NS['rdf']}}}resource"
    for (prefix, local), kind in XMP_FIELDS.items():
        tag = f"{{{NS[prefix]}}}{local}"
        for node in root.iter(tag):
            # A value may be text, an rdf:resource, or a list (rdf:Alt/Seq/Bag of rdf:li).
            values = [li.text for li in node.iter(f"{{{NS['rdf']}}}li") if li.text and li.text.strip()]
            if not values:
                values = [node.get(rdf_resource) or node.text or ""]
            for value in values:
                if _clean(value):
                    hints.append({"kind": kind, "source": f"xmp:{prefix}:{local}", "value": _clean(value)})
        for node in root.iter(f"{{{NS['rdf']}}}Description"):
            value = node.get(tag)  # the attribute form: <rdf:Description cc:license="...">
            if value and _clean(value):
                hints.append({"kind": kind, "source": f"xmp:{prefix}:{local}", "value": _clean(value)})
    return hints


# Byte markers of the metadata blocks read below (JPEG APP1/APP13, PNG eXIf/iTXt, WebP EXIF/XMP); a file
# with none of them (and not a TIFF, whose tags are its structure) is not opened a second time.
METADATA_MARKERS = (b"Exif", b"eXIf", b"EXIF", b"8BIM", b"xmpmeta", b"XML:com.adobe.xmp", b"XMP ")
TIFF_MAGIC = (b"II*\x00", b"MM\x00*")


def file_hints(data: bytes) -> list[dict[str, str]]:
    """Copyright, artist and licence hints from an image file's XMP packet, IPTC and EXIF fields."""
    hints = _xmp_hints(data)
    if not data.startswith(TIFF_MAGIC) and not any(marker in data for marker in METADATA_MARKERS):
        return hints
    try:
        from PIL import Image as PILImage
        from PIL import IptcImagePlugin

        from .imaging import ALLOWED_FORMATS

        with PILImage.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as im:
            if not hints:  # a packet the raw bytes do not show: a compressed PNG iTXt chunk, say
                for key in ("xmp", "XML:com.adobe.xmp"):
                    packet = im.info.get(key)
                    if packet:
                        hints = _xmp_hints(packet.encode("utf-8") if isinstance(packet, str) else bytes(packet))
                        break
            exif = im.getexif()
            for tag, kind in ((EXIF_ARTIST, "artist"), (EXIF_COPYRIGHT, "copyright")):
                if _clean(exif.get(tag)):
                    hints.append({"kind": kind, "source": f"exif:{'Artist' if tag == EXIF_ARTIST else 'Copyright'}",
                                  "value": _clean(exif.get(tag))})
            iptc = IptcImagePlugin.getiptcinfo(im) or {}
            for key, kind in IPTC_FIELDS.items():
                raw = iptc.get(key)
                for value in raw if isinstance(raw, list) else [raw]:
                    if _clean(value):
                        hints.append({"kind": kind, "source": f"iptc:{key[0]}:{key[1]}", "value": _clean(value)})
    except Exception:  # noqa: BLE001 - the import already validated the image; metadata is a bonus
        logger.debug("could not read the metadata of an image", exc_info=True)
    seen, out = set(), []
    for hint in hints:
        key = (hint["kind"], hint["source"], hint["value"])
        if key not in seen:
            seen.add(key)
            out.append(hint)
    return out


def page_hints(raw: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """The crawl's page hints ({kind, value, page_url}) as provenance hints."""
    out = []
    for hint in raw or []:
        if not isinstance(hint, dict):
            continue
        value, kind = _clean(hint.get("value")), str(hint.get("kind") or "")[:60]
        if not value:
            continue
        # A Creative Commons link without rel="license" may just be mentioned on the page: kept, not decisive.
        hint_kind = "artist" if kind.endswith("attributionName") else "copyright" if kind.endswith("dc:rights") \
            else "licence-mention" if kind == "cc-link" else "licence"
        out.append({"kind": hint_kind, "source": f"page:{kind}", "value": value,
                    "page_url": _clean(hint.get("page_url"))[:2000]})
    return out


def summarise(hints: list[dict[str, str]]) -> dict[str, str]:
    """licence, licence_url, copyright, artist from hints: the file's own fields first, then the page's."""
    def first(kind: str) -> str:
        ordered = sorted((h for h in hints if h["kind"] == kind), key=lambda h: h["source"].startswith("page:"))
        # A Creative Commons URL beats free text: it names the licence exactly.
        if kind == "licence":
            cc = [h for h in ordered if CC_RE.search(h["value"])]
            ordered = cc + [h for h in ordered if h not in cc]
        return ordered[0]["value"] if ordered else ""

    licence_value = first("licence")
    return {
        "licence": licence_name(licence_value),
        "licence_url": licence_value if licence_value.startswith(("http://", "https://")) else "",
        "copyright": first("copyright"),
        "artist": first("artist"),
    }


# -- the record ---------------------------------------------------------------------------------------------


def provenance_record(*, image: Image, data: bytes, fetched_at: datetime | None = None,
                      optout_signals: list[dict[str, Any]] | None = None, checked: bool = False,
                      page_licence: Iterable[dict[str, Any]] = ()) -> ImageProvenance:
    """Create the provenance row of a new image; ``checked``: a crawl looked for opt-outs."""
    hints = file_hints(data) + page_hints(page_licence)
    summary = summarise(hints)
    signals = list(optout_signals or [])
    status = OptOutStatus.OPTED_OUT if signals else OptOutStatus.NONE if checked else OptOutStatus.NOT_CHECKED
    # One INSERT: ingest calls this once, for the image it has just created (a scrape imports thousands).
    return ImageProvenance.objects.create(
        image=image, fetched_at=fetched_at, optout_status=status, optout_signals=signals, licence_hints=hints,
        licence=summary["licence"][:300], licence_url=summary["licence_url"][:2000],
        copyright=summary["copyright"], artist=summary["artist"],
    )


def provenance_fields(image: Image, prov: ImageProvenance | None = None, *, lookup: bool = True) -> dict[str, Any]:
    """The provenance of one image as plain JSON, for exports, run snapshots and model metadata.

    ``prov``: its row when the caller has it (``provenance_map``); ``lookup=False``: do not query for it.
    """
    if prov is None and lookup:
        prov = ImageProvenance.objects.filter(image_id=image.pk).first()
    return {
        "source": image.source,
        "source_url": image.source_url,
        "page_url": image.source_page_url,
        "fetched_at": prov.fetched_at.isoformat() if prov and prov.fetched_at else None,
        "optout_status": prov.optout_status if prov else OptOutStatus.NOT_CHECKED.value,
        "optout_signals": prov.optout_signals if prov else [],
        "licence": prov.licence if prov else "",
        "licence_url": prov.licence_url if prov else "",
        "copyright": prov.copyright if prov else "",
        "artist": prov.artist if prov else "",
    }


def provenance_map(images: Iterable[Image]) -> dict[int, dict[str, Any]]:
    """``provenance_fields`` of many images with one query: {image id: fields}."""
    images = list(images)
    rows = ImageProvenance.objects.in_bulk([i.pk for i in images])
    return {i.pk: provenance_fields(i, rows.get(i.pk), lookup=False) for i in images}


def provenance_summary(entries: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Counts over provenance dicts (``provenance_fields``): sources by domain, licences, opt-outs."""
    from urllib.parse import urlsplit

    entries = list(entries)
    domains: Counter[str] = Counter()
    licences: Counter[str] = Counter()
    opted_out = unknown_licence = 0
    for entry in entries:
        url = entry.get("page_url") or entry.get("source_url") or ""
        domains[(urlsplit(url).hostname or entry.get("source") or "unknown") if url else
                (entry.get("source") or "unknown")] += 1
        licences[entry.get("licence") or "unknown"] += 1
        opted_out += entry.get("optout_status") == OptOutStatus.OPTED_OUT
        unknown_licence += not entry.get("licence")
    return {"images": len(entries), "opted_out": opted_out, "unknown_licence": unknown_licence,
            "domains": dict(domains.most_common()), "licences": dict(licences.most_common())}
