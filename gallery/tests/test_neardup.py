"""Index-backed near duplicates agree with a brute-force comparison of every pair."""

import io
import random

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from gallery import neardup
from gallery.models import Image, NearDuplicatePair
from gallery.selectors import duplicate_groups, similar_images


def _row(owner, n, phash, **extra):
    image = Image(owner=owner, file=f"originals/{n}.jpg", sha256=f"{n:064x}", phash=phash, width=10, height=10,
                  format="JPEG", mime="image/jpeg", bytes=1, source="upload", **extra)
    image.save()
    neardup.record_pairs(image, max_distance=6)
    return image


def _signed(value):
    return value - (1 << 64) if value >= (1 << 63) else value


def _flip(value, bits):
    for bit in bits:
        value ^= 1 << bit
    return value


@pytest.fixture
def planted(user, other_user):
    """300 random hashes plus planted near copies at 1..9 bits, spread across bands, and another owner's copy."""
    rng = random.Random(5)
    images, n = [], 0
    for _ in range(300):
        n += 1
        images.append(_row(user, n, _signed(rng.getrandbits(64))))
    bases = images[:12]
    for k, base in enumerate(bases):
        distance = 1 + k % 9
        n += 1
        bits = rng.sample(range(64), distance)
        images.append(_row(user, n, _signed(_flip(base.phash & ((1 << 64) - 1), bits))))
    _row(other_user, 10_000, bases[0].phash, is_public=True)
    return images


def _brute_pairs(images, max_distance):
    return {(a.pk, b.pk) for i, a in enumerate(images) for b in images[i + 1:]
            if neardup.hamming(a.phash, b.phash) <= max_distance}


def test_band_lookup_finds_exactly_what_brute_force_finds(user, planted):
    for image in planted[:12] + planted[-12:]:
        for distance in (0, 3, 6, 9):
            expected = sorted((neardup.hamming(image.phash, o.phash), o.pk) for o in planted
                              if o.pk != image.pk and neardup.hamming(image.phash, o.phash) <= distance)
            got = [(d, img.pk) for img, d in similar_images(image, user=user, max_distance=distance, limit=1000)]
            assert got == expected


def test_stored_pairs_and_groups_match_brute_force(user, planted):
    stored = set(NearDuplicatePair.objects.filter(owner=user).values_list("image_id", "other_id"))
    expected = _brute_pairs(planted, 6)
    assert stored == expected and len(expected) >= 6  # the planted copies at 1..6 bits
    groups = duplicate_groups(owner=user)
    assert sorted(tuple(sorted(i.pk for i in g)) for g in groups) == sorted(tuple(sorted(p)) for p in expected)
    # Another owner's identical hash never joins a group.
    assert all(image.owner_id == user.pk for group in groups for image in group)


def test_groups_drop_trashed_images_and_follow_a_rebuild(user, planted, settings):
    pair = NearDuplicatePair.objects.filter(owner=user).first()
    Image.objects.filter(pk=pair.other_id).update(trashed_at="2026-01-01T00:00:00Z")
    assert all(pair.other_id not in {i.pk for i in g} for g in duplicate_groups(owner=user))
    settings.GALLERY_NEAR_DUPLICATE_DISTANCE = 9
    call_command("rebuild_near_duplicates", stdout=io.StringIO())
    stored = set(NearDuplicatePair.objects.filter(owner=user).values_list("image_id", "other_id"))
    assert stored == _brute_pairs(planted, 9)


def test_similar_images_neither_scans_nor_loads_every_hash(user, planted):
    image = planted[0]
    with CaptureQueriesContext(connection) as queries:
        similar_images(image, user=user)
    sql = " ".join(q["sql"] for q in queries.captured_queries)
    assert "phash_b0" in sql and "IN" in sql
    assert len(queries.captured_queries) == 2


def test_the_lookup_on_arrival_uses_the_band_indexes_not_a_scan_of_the_owners_images(user, planted):
    if connection.vendor != "sqlite":
        pytest.skip("reads SQLite's query plan")
    with CaptureQueriesContext(connection) as queries:
        assert neardup.pairs_for(planted[-1], image_model=Image, max_distance=6)  # a planted copy
    (lookup,) = [q["sql"] for q in queries.captured_queries]
    with connection.cursor() as cursor:
        plan = " ".join(str(row[-1]) for row in cursor.execute("EXPLAIN QUERY PLAN " + lookup).fetchall())
    assert all(f"gallery_img_phash_b{band}" in plan for band in range(4)), plan
    assert "gallery_img_owner_id" not in plan, plan


def test_bands_round_trip():
    value = 0x0123_4567_89AB_CDEF
    assert neardup.phash_bands(value) == (0x0123, 0x4567, 0x89AB, 0xCDEF)
    assert neardup.phash_bands(_signed(0xFFFF_0000_0000_0001)) == (0xFFFF, 0, 0, 1)
    assert len(neardup.band_neighbours(7, 1)) == 17 and len(set(neardup.band_neighbours(7, 2))) == 137
