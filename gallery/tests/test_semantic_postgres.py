"""Semantic search on PostgreSQL: pgvector where the server offers the extension, else the exact backend.

Runs when the tests use PostgreSQL (DATABASE_URL=postgres://...); skipped on the SQLite default. CI's
PostgreSQL (Debian's, no pgvector) runs the exact path; gallery/tests/test_semantic_pgvector.py runs this file
again against a private PostgreSQL with pgvector and sets IMAGINEER_TEST_EXPECT_PGVECTOR=1, so there the
pgvector path must be the one taken.
"""

import os
import re

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from gallery.models import Image, ImageEmbedding
from gallery.semantic import store
from gallery.tests.conftest import CAPTIONS, OTHER_CAPTIONS, caption_picture


@pytest.fixture(autouse=True)
def _postgres_only(db):
    if connection.vendor != "postgresql":
        pytest.skip("needs the tests to run on PostgreSQL (set DATABASE_URL)")


def _pgvector_available() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
        return cursor.fetchone() is not None


def _expect_pgvector() -> bool:
    return os.environ.get("IMAGINEER_TEST_EXPECT_PGVECTOR") == "1"


def _pgvec_column_type() -> str | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT udt_name FROM information_schema.columns WHERE table_schema = current_schema() "
                       "AND table_name = 'gallery_imageembedding' AND column_name = 'pgvec'")
        row = cursor.fetchone()
    return row[0] if row else None


def test_the_selector_uses_pgvector_only_where_the_server_has_it(db):
    if _expect_pgvector():
        assert _pgvector_available(), "IMAGINEER_TEST_EXPECT_PGVECTOR is set but this server has no pgvector"
    assert store.backend() == ("pgvector" if _pgvector_available() else "exact")


def test_the_migration_adds_a_vector_column_only_where_the_server_has_pgvector(db):
    assert _pgvec_column_type() == ("vector" if _pgvector_available() else None)


def test_forcing_exact_search_wins_over_pgvector(db, settings):
    settings.GALLERY_VECTOR_BACKEND = "exact"
    assert store.backend() == "exact"


DIM = 24


@pytest.fixture
def vectors(user, other_user):
    """40 images with random unit vectors under model "m": 30 of the user's (the first 10 public), 10 private
    ones of another user's that the user must never get back."""
    rng = np.random.default_rng(17)
    matrix = rng.normal(size=(40, DIM)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    images = []
    for n in range(40):
        owner = user if n < 30 else other_user
        images.append(Image.objects.create(
            owner=owner, file=f"v/{n}.png", sha256=f"{n:064x}", phash=n, width=8, height=8, format="PNG",
            mime="image/png", bytes=1, source="upload", is_public=n < 10))
        store.save(images[-1].pk, "m", matrix[n])
    return images, matrix


def _expected(images, matrix, query, scope, limit, exclude=None):
    """The ranking by cosine similarity, computed here in numpy: (id, similarity), best first, ties by id."""
    query = query / np.linalg.norm(query)
    pairs = [(float(matrix[n] @ query), images[n].pk) for n in scope if images[n].pk != exclude]
    pairs.sort(key=lambda p: (-p[0], p[1]))
    return pairs[:limit]


def _assert_same_ranking(got, expected):
    assert [pk for pk, _ in got] == [pk for _, pk in expected]
    assert np.allclose([score for _, score in got], [score for score, _ in expected], atol=1e-5)


def test_nearest_on_postgres_ranks_by_cosine_within_the_viewers_scope(vectors, user, settings):
    images, matrix = vectors
    rng = np.random.default_rng(5)
    query = (matrix[3] + 0.3 * rng.normal(size=DIM)).astype(np.float32)  # not unit length: cosine, not dot
    scope = Image.objects.visible_to(user)
    with CaptureQueriesContext(connection) as queries:
        got = store.nearest(query, images=scope, model="m", limit=12, exclude=images[4].pk)
    ranking_sql = [q["sql"] for q in queries.captured_queries if "gallery_imageembedding" in q["sql"]
                   and "ORDER BY" in q["sql"]]
    if store.backend() == "pgvector":
        assert any("<=>" in sql for sql in ranking_sql), ranking_sql  # ordered in SQL by pgvector's distance
    else:
        assert not any("<=>" in sql for sql in ranking_sql), ranking_sql
    _assert_same_ranking(got, _expected(images, matrix, query, range(30), 12, exclude=images[4].pk))
    assert got[0][0] == images[3].pk

    settings.GALLERY_VECTOR_BACKEND = "exact"
    exact = store.nearest(query, images=scope, model="m", limit=12, exclude=images[4].pk)
    assert [pk for pk, _ in exact] == [pk for pk, _ in got]
    assert np.allclose([s for _, s in exact], [s for _, s in got], atol=1e-5)


def test_nearest_on_postgres_leaves_out_other_models_and_other_sizes(vectors, user, other_user):
    images, matrix = vectors
    store.save(images[0].pk, "other-model", matrix[0])  # the fox re-embedded by another model
    store.save(images[1].pk, "m", np.ones(DIM // 2, dtype=np.float32) / np.sqrt(DIM / 2))  # same tag, new size
    got = store.nearest(matrix[1], images=Image.objects.visible_to(user), model="m", limit=50)
    assert images[0].pk not in [pk for pk, _ in got] and images[1].pk not in [pk for pk, _ in got]
    _assert_same_ranking(got, _expected(images, matrix, matrix[1], range(2, 30), 50))


def test_rows_saved_before_pgvector_still_rank(vectors, user, settings):
    """Rows without a pgvec value (saved while IMAGINEER_VECTOR_BACKEND=exact, or before the column existed)
    are ranked with the rest, not dropped or sorted last."""
    if store.backend() != "pgvector":
        pytest.skip("only PostgreSQL with pgvector has a pgvec column")
    images, matrix = vectors
    with connection.cursor() as cursor:
        cursor.execute("UPDATE gallery_imageembedding SET pgvec = NULL WHERE image_id = ANY(%s)",
                       [[image.pk for image in images[:30:2]]])
    got = store.nearest(matrix[6], images=Image.objects.visible_to(user), model="m", limit=15)
    _assert_same_ranking(got, _expected(images, matrix, matrix[6], range(30), 15))
    assert store.fill_missing_pgvec() == 15
    assert store.fill_missing_pgvec() == 0
    with CaptureQueriesContext(connection) as queries:
        got = store.nearest(matrix[6], images=Image.objects.visible_to(user), model="m", limit=15)
    exact_scans = [q["sql"] for q in queries.captured_queries if '"gallery_imageembedding"."vector" FROM' in q["sql"]]
    assert exact_scans == []  # once filled, nothing is read back into Python
    _assert_same_ranking(got, _expected(images, matrix, matrix[6], range(30), 15))
    settings.GALLERY_VECTOR_BACKEND = "exact"
    store.save(images[8].pk, "m", matrix[9])
    settings.GALLERY_VECTOR_BACKEND = "auto"
    matrix = matrix.copy()
    matrix[8] = matrix[9]
    got = store.nearest(matrix[9], images=Image.objects.visible_to(user), model="m", limit=3)
    assert {pk for pk, _ in got[:2]} == {images[8].pk, images[9].pk}  # a stale pgvec would leave 8 out
    assert np.allclose([s for _, s in got[:2]], 1.0, atol=1e-5)


def test_a_text_query_ranks_the_planted_image_first_on_postgres(settings, trained_clip, user, other_user, ingest,
                                                                 run_worker, user_client):
    settings.GALLERY_CLIP_MODEL = str(trained_clip)
    planted = [ingest(user, caption_picture(n), filename=f"p{n}.png") for n in range(len(CAPTIONS))]
    for n in range(len(OTHER_CAPTIONS)):
        ingest(user, caption_picture(len(CAPTIONS) + n), filename=f"d{n}.png")
    theirs = ingest(other_user, caption_picture(0), filename="theirs.png")
    run_worker("default")
    assert ImageEmbedding.objects.count() == len(CAPTIONS) + len(OTHER_CAPTIONS) + 1
    for n, caption in enumerate(CAPTIONS):
        html = user_client.get("/gallery/search/", {"q": caption}).content.decode()
        ids = [int(x) for x in re.findall(r'data-id="(\d+)"', html)]
        assert ids[0] == planted[n].pk and theirs.pk not in ids, caption
