"""Where vectors live and how the nearest are found: one selector, three backends.

- pgvector: PostgreSQL with the `vector` extension. The migration adds a `pgvec vector` column to
  gallery_imageembedding when the server offers the extension; we order by cosine distance (`<=>`) in SQL.
  save() fills it whenever the column exists (even while IMAGINEER_VECTOR_BACKEND=exact), so it never goes
  stale; rows whose pgvec is still NULL (written some other way) are ranked exactly and merged in, and
  fill_missing_pgvec() (run by `embed_images`) fills them.
- sqlite-vec: SQLite with the sqlite-vec extension loaded into every connection (when Python's sqlite3 can
  load extensions); `vec_distance_cosine` over the stored float32 blobs, in SQL.
- exact: anywhere else (PostgreSQL without pgvector, a Python built without SQLite extension loading): the
  viewer's visible vectors are read in chunks and ranked with numpy. Exact, and slower at scale.

Every backend ranks only images the viewer may see (Image.objects.visible_to) made by the current model, and
only vectors of the query's length, by cosine similarity.
"""

from __future__ import annotations

import logging

import numpy as np
from django.conf import settings
from django.db import connection
from django.db.models import BooleanField, F, FloatField, Func, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Length

from ..models import Image, ImageEmbedding

logger = logging.getLogger(__name__)
_CHUNK = 5000


def load_sqlite_vec(sender, connection, **kwargs) -> None:
    """connection_created receiver: load sqlite-vec into SQLite connections where Python allows it."""
    if connection.vendor != "sqlite":
        return
    raw = connection.connection
    if not hasattr(raw, "enable_load_extension"):
        return  # this Python's sqlite3 was built without extension loading: the exact backend serves
    try:
        import sqlite_vec

        raw.enable_load_extension(True)
        sqlite_vec.load(raw)
        raw.enable_load_extension(False)
    except Exception:  # noqa: BLE001 - a missing extension only means the exact backend
        logger.warning("sqlite-vec could not be loaded; vector search falls back to exact", exc_info=True)


def _has_pgvec_column() -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                       "AND table_name = %s AND column_name = 'pgvec'", [ImageEmbedding._meta.db_table])
        return cursor.fetchone() is not None


def backend() -> str:
    if settings.GALLERY_VECTOR_BACKEND == "exact":
        return "exact"
    if connection.vendor == "postgresql":
        return "pgvector" if _has_pgvec_column() else "exact"
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            try:
                cursor.execute("SELECT vec_version()")
                return "sqlite-vec"
            except Exception:  # noqa: BLE001 - the function is missing when the extension is not loaded
                return "exact"
    return "exact"


def _pgvec_is(state: str) -> RawSQL:
    if state == "NULL":
        return RawSQL("pgvec IS NULL", (), output_field=BooleanField())
    return RawSQL("pgvec IS NOT NULL", (), output_field=BooleanField())


def _pg_literal(vector: np.ndarray) -> str:
    # 9 significant digits round-trip a float32 exactly (7 do not).
    return "[" + ",".join(f"{float(x):.9g}" for x in np.asarray(vector, dtype=np.float32)) + "]"


def save(image_id: int, model: str, vector: np.ndarray) -> None:
    vector = np.asarray(vector, dtype=np.float32)
    ImageEmbedding.objects.update_or_create(image_id=image_id, defaults={"model": model,
                                                                          "vector": vector.tobytes()})
    # Not backend(): with the exact backend forced, pgvec must still follow the vector, or switching back to
    # pgvector would rank by stale values.
    if _has_pgvec_column():
        with connection.cursor() as cursor:
            cursor.execute("UPDATE gallery_imageembedding SET pgvec = %s::vector WHERE image_id = %s",
                           [_pg_literal(vector), image_id])


def fill_missing_pgvec(batch: int = 1000) -> int:
    """Copy stored vectors into pgvec where it is NULL (rows written without save()); returns how many."""
    if not _has_pgvec_column():
        return 0
    filled = 0
    while True:
        rows = list(ImageEmbedding.objects.filter(_pgvec_is("NULL")).values_list("image_id", "vector")[:batch])
        if not rows:
            return filled
        with connection.cursor() as cursor:
            cursor.executemany("UPDATE gallery_imageembedding SET pgvec = %s::vector WHERE image_id = %s",
                               [(_pg_literal(np.frombuffer(bytes(blob), np.float32)), pk) for pk, blob in rows])
        filled += len(rows)


def vector_of(image_id: int, model: str) -> np.ndarray | None:
    row = ImageEmbedding.objects.filter(image_id=image_id, model=model).values_list("vector", flat=True).first()
    return None if row is None else np.frombuffer(bytes(row), dtype=np.float32)


def nearest(vector: np.ndarray, *, images, model: str, limit: int = 60, exclude: int | None = None
            ) -> list[tuple[int, float]]:
    """(image id, cosine similarity) of the `limit` nearest among `images` (a queryset the caller has already
    narrowed to what the viewer may see), most similar first."""
    vector = np.asarray(vector, dtype=np.float32)
    # Only vectors of the query's length compare: pgvector and sqlite-vec raise an error on any other.
    rows = ImageEmbedding.objects.annotate(nbytes=Length("vector")).filter(
        model=model, image_id__in=images.values("pk"), nbytes=vector.nbytes)
    if exclude is not None:
        rows = rows.exclude(image_id=exclude)
    kind = backend()
    if kind == "pgvector":
        ranked = rows.filter(_pgvec_is("NOT NULL")).annotate(
            distance=RawSQL("pgvec <=> %s::vector", (_pg_literal(vector),))).order_by(
            "distance", "image_id").values_list("image_id", "distance")[:limit]
        pairs = [(pk, 1.0 - float(d)) for pk, d in ranked]
        unfilled = rows.filter(_pgvec_is("NULL"))
        if unfilled.exists():
            logger.warning("some embeddings have no pgvec value; ranking them exactly (embed_images fills them)")
            pairs = sorted(pairs + _exact(unfilled, vector, limit), key=lambda p: (-p[1], p[0]))[:limit]
        return pairs
    if kind == "sqlite-vec":
        distance = Func(F("vector"), Value(vector.tobytes()), function="vec_distance_cosine",
                        output_field=FloatField())
        ranked = rows.annotate(distance=distance).order_by("distance", "image_id").values_list(
            "image_id", "distance")[:limit]
        return [(pk, 1.0 - float(d)) for pk, d in ranked]
    return _exact(rows, vector, limit)


def _exact(rows, vector: np.ndarray, limit: int) -> list[tuple[int, float]]:
    unit = vector / max(float(np.linalg.norm(vector)), 1e-12)
    best_ids = np.empty(0, dtype=np.int64)
    best_scores = np.empty(0, dtype=np.float32)
    ids: list[int] = []
    blobs: list[bytes] = []

    def flush():
        nonlocal best_ids, best_scores
        if not ids:
            return
        matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), -1)
        # Cosine, as pgvector's and sqlite-vec's distances are: stored vectors are unit length by contract, but
        # a query need not be.
        norms = np.maximum(np.linalg.norm(matrix, axis=1), 1e-12)
        scores = (matrix @ unit) / norms if matrix.shape[1] == vector.shape[0] else np.full(len(ids), -np.inf)
        best_ids = np.concatenate([best_ids, np.array(ids, dtype=np.int64)])
        best_scores = np.concatenate([best_scores, scores.astype(np.float32)])
        if len(best_ids) > limit:
            keep = np.argpartition(-best_scores, limit)[:limit]
            best_ids, best_scores = best_ids[keep], best_scores[keep]
        ids.clear()
        blobs.clear()

    for pk, blob in rows.values_list("image_id", "vector").iterator(chunk_size=_CHUNK):
        ids.append(pk)
        blobs.append(bytes(blob))
        if len(ids) >= _CHUNK:
            flush()
    flush()
    order = sorted(range(len(best_ids)), key=lambda i: (-float(best_scores[i]), int(best_ids[i])))
    return [(int(best_ids[i]), float(best_scores[i])) for i in order if np.isfinite(best_scores[i])][:limit]


def visible_images(user):
    return Image.objects.visible_to(user)
