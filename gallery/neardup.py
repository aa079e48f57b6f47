"""Near-duplicate lookups through indexes (multi-index hashing), never a scan of every hash.

The 64-bit perceptual hash is split into four 16-bit bands, each in its own indexed column
(`phash_b0`..`phash_b3`). Two hashes within `d` bits differ in at most `d // 4` bits in at least one
band (pigeonhole), so the candidates for one image are the rows whose band i equals one of the
16-bit values within `d // 4` bits of the image's band i, for some i: a few indexed IN lookups. The
exact Hamming distance is then checked on those few candidates only.

The duplicates page reads `NearDuplicatePair` rows, written when an image arrives (one lookup per
new image), so it never compares all pairs. `rebuild_pairs` recomputes them (after the distance
setting changes: `manage.py rebuild_near_duplicates`).
"""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations

from django.db import connections

BANDS = 4
BAND_BITS = 16
_BAND_MASK = (1 << BAND_BITS) - 1
_U64 = (1 << 64) - 1
# Beyond this radius per band the IN lists grow past a few thousand values; a caller asking for more is
# asking for "similar", not "near duplicate", and is capped here.
MAX_DISTANCE = 11


def phash_bands(phash: int) -> tuple[int, int, int, int]:
    """The four 16-bit bands of a (signed, stored) 64-bit hash, most significant first."""
    value = phash & _U64
    return tuple((value >> (BAND_BITS * (BANDS - 1 - i))) & _BAND_MASK for i in range(BANDS))  # type: ignore[return-value]


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & _U64).bit_count()


@lru_cache(maxsize=8)
def _flip_masks(radius: int) -> tuple[int, ...]:
    masks = [0]
    for r in range(1, radius + 1):
        for bits in combinations(range(BAND_BITS), r):
            mask = 0
            for bit in bits:
                mask |= 1 << bit
            masks.append(mask)
    return tuple(masks)


def band_neighbours(value: int, radius: int) -> list[int]:
    """Every 16-bit value within `radius` bits of `value` (itself included)."""
    return [value ^ mask for mask in _flip_masks(radius)]


def _radius(max_distance: int) -> int:
    return min(max_distance, MAX_DISTANCE) // BANDS


def near(phash: int, rows, max_distance: int) -> list[tuple[int, int]]:
    """(pk, distance) of the candidate rows (pk, phash) within `max_distance`, closest first, then by pk."""
    found = [(pk, hamming(phash, other)) for pk, other in rows]
    return sorted(((pk, d) for pk, d in found if d <= max_distance), key=lambda item: (item[1], item[0]))


def candidate_rows(image, *, image_model, max_distance: int) -> list[tuple[int, int]]:
    """(pk, phash) of the other images of `image`'s owner that may be within the distance (a superset,
    served by the band indexes).

    The owner goes into each band's condition, ``(owner = x AND b0 IN ..) OR (owner = x AND b1 IN ..)``,
    not beside the OR: the indexes are (owner, band), and for ``owner = x AND (b0 IN .. OR ..)`` the
    planner takes the owner index and tests every one of the owner's rows, so each arriving image cost a
    scan of its owner's gallery. Runs once per arriving image (a scrape brings thousands), so the SQL is
    written here: the ORM spent about ten times the query's own time compiling the 4 × 17 IN values
    (radius 1). Names come from the model's _meta, so migrations' historical models work too.
    """
    meta, connection = image_model._meta, connections[image_model._default_manager.db]
    quote = connection.ops.quote_name

    def column(name: str) -> str:
        return quote(meta.get_field(name).column)

    radius = _radius(max_distance)
    arms, params = [], []
    for index, value in enumerate(phash_bands(image.phash)):
        values = band_neighbours(value, radius)
        placeholders = ", ".join(["%s"] * len(values))
        arms.append(f"({column('owner')} = %s AND {column(f'phash_b{index}')} IN ({placeholders}))")
        params += [image.owner_id, *values]
    # Identifiers come from the model's _meta, quoted; every value is a parameter.
    sql = (f"SELECT {quote(meta.pk.column)}, {column('phash')} FROM {quote(meta.db_table)} "  # noqa: S608
           f"WHERE ({' OR '.join(arms)}) AND {quote(meta.pk.column)} <> %s")
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, image.pk])
        return cursor.fetchall()


def pairs_for(image, *, image_model, max_distance: int) -> list[tuple[int, int, int]]:
    """(lower pk, higher pk, distance) for `image` and each other image of its owner within the distance."""
    rows = candidate_rows(image, image_model=image_model, max_distance=max_distance)
    return [(min(image.pk, pk), max(image.pk, pk), d) for pk, d in near(image.phash, rows, max_distance)]


def record_pairs(image, *, max_distance: int, image_model=None, pair_model=None) -> int:
    """Store the pairs of a newly arrived image. The models are parameters so migrations can use this."""
    if image_model is None or pair_model is None:
        from .models import Image, NearDuplicatePair

        image_model, pair_model = image_model or Image, pair_model or NearDuplicatePair
    rows = [pair_model(owner_id=image.owner_id, image_id=a, other_id=b, distance=d)
            for a, b, d in pairs_for(image, image_model=image_model, max_distance=max_distance)]
    pair_model.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def rebuild_pairs(*, max_distance: int, owner_id: int | None = None, image_model=None, pair_model=None) -> int:
    """Recompute every stored pair (of one owner, or everybody's): one indexed lookup per image."""
    if image_model is None or pair_model is None:
        from .models import Image, NearDuplicatePair

        image_model, pair_model = image_model or Image, pair_model or NearDuplicatePair
    images = image_model.objects.all()
    pairs = pair_model.objects.all()
    if owner_id is not None:
        images, pairs = images.filter(owner_id=owner_id), pairs.filter(owner_id=owner_id)
    pairs.delete()
    total = 0
    for image in images.only("pk", "owner_id", "phash").order_by("pk").iterator(chunk_size=2000):
        rows = [pair_model(owner_id=image.owner_id, image_id=a, other_id=b, distance=d)
                for a, b, d in pairs_for(image, image_model=image_model, max_distance=max_distance) if a == image.pk]
        pair_model.objects.bulk_create(rows, ignore_conflicts=True)
        total += len(rows)
    return total
