"""Dataset exports carry each image's provenance: metadata.jsonl lines (jsonl) and provenance.jsonl beside the
kohya folder, with source, page, fetch time, opt-out status and licence."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from gallery import services as gallery_services
from gallery.tests.test_provenance import CC_BY, jpeg_with_exif_and_xmp
from labeling import services

SIGNAL = {"signal": "tdm-reservation", "value": "1", "where": "page", "url": "https://site.example/p.html"}


def _album(user, ingest):
    scraped = ingest(user, jpeg_with_exif_and_xmp(), filename="s.jpg", source="scrape",
                     source_url="https://site.example/i/s.jpg", source_page_url="https://site.example/p.html",
                     provenance={"checked": True, "optout_signals": [SIGNAL],
                                 "fetched_at": datetime(2026, 11, 30, 12, 0, tzinfo=UTC)})
    uploaded = ingest(user, seed=3)
    album = gallery_services.album_create(owner=user, name="Mixed")
    gallery_services.album_add_images(album=album, images=[scraped, uploaded])
    return album, scraped, uploaded


def test_jsonl_metadata_lines_carry_provenance_and_licence(user, ingest, tmp_path):
    album, scraped, uploaded = _album(user, ingest)
    services.dataset_export(album=album, user=user, fmt="jsonl", out_dir=tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert [x["file_name"] for x in lines] == ["00001.jpg", "00002.jpg"]
    first, second = lines
    assert first["source"] == "scrape" and first["source_url"] == "https://site.example/i/s.jpg"
    assert first["page_url"] == "https://site.example/p.html"
    assert first["fetched_at"] == "2026-11-30T12:00:00+00:00"
    assert first["optout_status"] == "opted_out" and first["optout_signals"] == [SIGNAL]
    assert (first["licence"], first["licence_url"], first["artist"]) == ("CC BY 4.0", CC_BY, "Grace Example")
    assert second["source"] == "upload" and second["licence"] == "" and second["optout_status"] == "not_checked"


def test_kohya_export_writes_provenance_jsonl_beside_the_folder(user, ingest, tmp_path):
    album, scraped, uploaded = _album(user, ingest)
    services.dataset_export(album=album, user=user, fmt="kohya", out_dir=tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "provenance.jsonl").read_text().splitlines()]
    assert [(r["file_name"], r["image_id"]) for r in rows] == [("1_mixed/00001.jpg", scraped.pk),
                                                               ("1_mixed/00002.jpg", uploaded.pk)]
    assert (tmp_path / rows[0]["file_name"]).is_file()
    assert rows[0]["optout_status"] == "opted_out" and rows[0]["licence"] == "CC BY 4.0"
    assert rows[0]["text"] == "Mixed"
    assert not (tmp_path / "1_mixed" / "metadata.jsonl").exists()
