"""Provenance of images: licence hints from XMP, IPTC and EXIF in the file (uploads too), from a page's markup,
the record made at ingest, and the image page showing it. Test images are built with Pillow here."""

from __future__ import annotations

import io
import struct

from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

from gallery.models import ImageProvenance, OptOutStatus
from gallery.provenance import file_hints, licence_name, page_hints, provenance_fields, provenance_summary, summarise

CC_BY = "https://creativecommons.org/licenses/by/4.0/"
XMP = f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"
      xmlns:xmpRights="http://ns.adobe.com/xap/1.0/rights/" xmlns:cc="http://creativecommons.org/ns#"
      cc:attributionName="Grace Example">
   <dc:creator><rdf:Seq><rdf:li>Grace Example</rdf:li></rdf:Seq></dc:creator>
   <dc:rights><rdf:Alt><rdf:li xml:lang="x-default">© 2026 Grace Example</rdf:li></rdf:Alt></dc:rights>
   <xmpRights:WebStatement>{CC_BY}</xmpRights:WebStatement>
   <cc:license rdf:resource="{CC_BY}"/>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""


def _picture() -> PILImage.Image:
    im = PILImage.new("RGB", (80, 60))
    for x in range(80):
        for y in range(60):
            im.putpixel((x, y), (x * 3 % 256, y * 4 % 256, (x * y) % 256))
    return im


def jpeg_with_exif_and_xmp() -> bytes:
    exif = PILImage.Exif()
    exif[0x013B] = "Exif Artist"
    exif[0x8298] = "Copyright Exif Holder"
    out = io.BytesIO()
    _picture().save(out, format="JPEG", exif=exif, xmp=XMP.encode())
    return out.getvalue()


def _iptc_dataset(number: int, value: str) -> bytes:
    data = value.encode()
    return b"\x1c\x02" + bytes([number]) + struct.pack(">H", len(data)) + data


def jpeg_with_iptc() -> bytes:
    """A JPEG with an APP13 Photoshop segment holding IPTC by-line (2:80) and copyright notice (2:116)."""
    out = io.BytesIO()
    _picture().save(out, format="JPEG")
    jpeg = out.getvalue()
    iptc = _iptc_dataset(80, "Iptc Byline") + _iptc_dataset(116, "Iptc Copyright Notice")
    if len(iptc) % 2:
        iptc += b"\x00"
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(iptc)) + iptc
    payload = b"Photoshop 3.0\x00" + resource
    segment = b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + segment + jpeg[2:]


def png_with_xmp(*, compressed: bool = False) -> bytes:
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP, zip=compressed)
    out = io.BytesIO()
    _picture().save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def _by_source(hints):
    return {h["source"]: h["value"] for h in hints}


def test_xmp_and_exif_fields_of_a_jpeg():
    hints = _by_source(file_hints(jpeg_with_exif_and_xmp()))
    assert hints["xmp:dc:creator"] == "Grace Example"
    assert hints["xmp:dc:rights"] == "© 2026 Grace Example"
    assert hints["xmp:xmpRights:WebStatement"] == CC_BY
    assert hints["xmp:cc:license"] == CC_BY
    assert hints["xmp:cc:attributionName"] == "Grace Example"
    assert hints["exif:Artist"] == "Exif Artist"
    assert hints["exif:Copyright"] == "Copyright Exif Holder"


def test_iptc_fields_of_a_jpeg():
    hints = _by_source(file_hints(jpeg_with_iptc()))
    assert hints == {"iptc:2:80": "Iptc Byline", "iptc:2:116": "Iptc Copyright Notice"}


def test_xmp_in_a_png_text_chunk_plain_or_compressed():
    for compressed in (False, True):
        data = png_with_xmp(compressed=compressed)
        assert (b"<x:xmpmeta" in data) is not compressed
        hints = _by_source(file_hints(data))
        assert hints["xmp:cc:license"] == CC_BY and hints["xmp:dc:creator"] == "Grace Example"


def test_files_without_metadata_or_with_a_broken_packet_give_no_hints():
    out = io.BytesIO()
    _picture().save(out, format="PNG")
    assert file_hints(out.getvalue()) == []
    broken = out.getvalue() + b"<x:xmpmeta><rdf:RDF><unclosed></x:xmpmeta>"
    assert file_hints(broken) == []
    bomb = (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><x:xmpmeta xmlns:x="adobe:ns:meta/">&a;</x:xmpmeta>')
    assert file_hints(out.getvalue() + bomb) == []  # entities are refused, not expanded


def test_licence_names_and_the_summary_prefers_the_file_and_creative_commons():
    assert licence_name("https://creativecommons.org/licenses/by-nc-sa/3.0/deed.en") == "CC BY-NC-SA 3.0"
    assert licence_name("https://creativecommons.org/publicdomain/zero/1.0/") == "CC0 1.0"
    assert licence_name("All rights reserved") == "All rights reserved"
    hints = file_hints(jpeg_with_exif_and_xmp()) + page_hints(
        [{"kind": "link-rel-license", "value": "https://example.com/terms", "page_url": "https://example.com/p"}])
    summary = summarise(hints)
    assert summary == {"licence": "CC BY 4.0", "licence_url": CC_BY, "copyright": "© 2026 Grace Example",
                       "artist": "Grace Example"}
    only_page = summarise(page_hints([{"kind": "a-rel-license", "value": "https://example.com/terms"}]))
    assert only_page["licence"] == only_page["licence_url"] == "https://example.com/terms"
    # A plain link to a Creative Commons licence (no rel="license") is recorded but does not decide.
    mention = page_hints([{"kind": "cc-link", "value": CC_BY}])
    assert mention[0]["kind"] == "licence-mention" and summarise(mention)["licence"] == ""


def test_an_upload_gets_its_provenance_from_the_file(user, ingest):
    image = ingest(user, jpeg_with_exif_and_xmp(), filename="grace.jpg")
    prov = ImageProvenance.objects.get(image=image)
    assert prov.optout_status == OptOutStatus.NOT_CHECKED and prov.fetched_at is None
    assert (prov.licence, prov.licence_url, prov.artist) == ("CC BY 4.0", CC_BY, "Grace Example")
    fields = provenance_fields(image)
    assert fields["licence"] == "CC BY 4.0" and fields["source"] == "upload"
    plain = ingest(user, seed=5)
    assert provenance_fields(plain)["licence"] == "" and ImageProvenance.objects.filter(image=plain).exists()
    summary = provenance_summary([provenance_fields(image), provenance_fields(plain)])
    assert summary["licences"] == {"CC BY 4.0": 1, "unknown": 1} and summary["unknown_licence"] == 1


def test_the_image_page_shows_the_provenance(user, user_client, ingest):
    image = ingest(user, jpeg_with_iptc(), filename="iptc.jpg", source="scrape",
                   source_url="https://site.example/i/a.jpg", source_page_url="https://site.example/p.html",
                   provenance={"checked": True, "optout_signals": [
                       {"signal": "x-robots-tag", "value": "noai", "where": "image", "url": "https://site.example/i/a.jpg"}]})
    html = user_client.get(image.get_absolute_url()).content.decode()
    assert 'id="provenance"' in html
    assert "Opted out at fetch time" in html and "<code>x-robots-tag</code> noai on the image" in html
    assert "Iptc Copyright Notice" in html and "Iptc Byline" in html
    assert "https://site.example/p.html" in html


def test_an_image_without_a_row_still_renders(user, user_client, ingest):
    image = ingest(user, seed=9)
    ImageProvenance.objects.filter(image=image).delete()
    html = user_client.get(image.get_absolute_url()).content.decode()
    assert "No provenance recorded" in html


def test_tiff_tags_and_webp_xmp():
    out = io.BytesIO()
    _picture().save(out, format="TIFF", tiffinfo={315: "Tiff Artist", 33432: "Tiff Copyright"})
    assert _by_source(file_hints(out.getvalue())) == {"exif:Artist": "Tiff Artist", "exif:Copyright": "Tiff Copyright"}
    out = io.BytesIO()
    _picture().save(out, format="WEBP", xmp=XMP.encode())
    assert _by_source(file_hints(out.getvalue()))["xmp:cc:license"] == CC_BY
