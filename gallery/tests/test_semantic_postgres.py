"""Semantic search on PostgreSQL without pgvector: the exact backend.

Runs when the tests use PostgreSQL (DATABASE_URL=postgres://...); skipped on the SQLite default.
"""

import re

import pytest
from django.db import connection

from gallery.models import ImageEmbedding
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


def test_the_selector_uses_pgvector_only_where_the_server_has_it(db):
    assert store.backend() == ("pgvector" if _pgvector_available() else "exact")


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
