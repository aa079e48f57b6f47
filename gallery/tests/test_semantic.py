"""Semantic search with a tiny trained CLIP: embeddings on the default queue, text and "more like this"."""

import io
import re
import sqlite3
import subprocess

import numpy as np
import pytest
from django.test import Client
from PIL import Image as PILImage

from gallery.models import Image, ImageEmbedding
from gallery.semantic import store
from gallery.tests.conftest import CAPTIONS, caption_picture
from imagineer.testing import image_bytes


def _ids(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'data-id="(\d+)"', html)]


@pytest.fixture
def clip_settings(settings, trained_clip):
    settings.GALLERY_CLIP_MODEL = str(trained_clip)
    return settings


@pytest.fixture
def library(clip_settings, user, other_user, ingest, run_worker):
    """The six captioned pictures plus distractors, embedded by a real worker on the default queue."""
    planted = [ingest(user, caption_picture(n), filename=f"p{n}.png", is_public=n % 2 == 0)
               for n in range(len(CAPTIONS))]
    distractors = [ingest(user, caption_picture(len(CAPTIONS) + n), filename=f"d{n}.png") for n in range(6)]
    theirs = ingest(other_user, caption_picture(0), filename="theirs.png")  # private, same picture as the fox
    run_worker("default")
    return {"planted": planted, "distractors": distractors, "theirs": theirs}


def test_every_image_is_embedded_on_the_default_queue(library):
    everything = library["planted"] + library["distractors"] + [library["theirs"]]
    assert ImageEmbedding.objects.filter(image__in=everything).count() == len(everything)


def test_a_text_query_ranks_the_planted_image_first(library, user_client):
    for n, caption in enumerate(CAPTIONS):
        html = user_client.get("/gallery/search/", {"q": caption}).content.decode()
        ids = _ids(html)
        assert ids[0] == library["planted"][n].pk, caption
        assert library["theirs"].pk not in ids  # another user's private image never shows


def test_more_like_this_finds_a_near_copy_first(library, user, ingest, run_worker, user_client):
    fox = library["planted"][0]
    out = io.BytesIO()
    PILImage.open(io.BytesIO(caption_picture(0))).convert("RGB").resize((60, 60)).save(out, "JPEG", quality=85)
    copy = ingest(user, out.getvalue(), filename="fox-copy.jpg")
    run_worker("default")
    html = user_client.get(f"/gallery/images/{fox.pk}/like/").content.decode()
    ids = _ids(html)
    assert ids[0] == copy.pk and fox.pk not in ids and library["theirs"].pk not in ids


def test_anonymous_semantic_search_sees_only_public_images(library):
    ids = _ids(Client().get("/gallery/search/", {"q": "a blue whale"}).content.decode())
    public = {i.pk for i in Image.objects.filter(is_public=True)}
    assert ids and set(ids) <= public
    assert Client().get(f"/gallery/images/{library['planted'][1].pk}/like/").status_code == 404  # private image


def test_images_without_an_embedding_still_show_in_plain_search(library, user, ingest, user_client, settings):
    late = ingest(user, image_bytes(seed=5), filename="whale-late.jpg", title="a blue whale, late")
    assert not ImageEmbedding.objects.filter(image=late).exists()  # no worker has run since
    assert late.pk in _ids(user_client.get("/gallery/", {"q": "whale"}).content.decode())
    ids = _ids(user_client.get("/gallery/search/", {"q": "a blue whale"}).content.decode())
    assert ids[0] == library["planted"][1].pk and late.pk in ids


def test_semantic_search_is_off_without_a_model(user_client, settings, db):
    settings.GALLERY_CLIP_MODEL = ""
    response = user_client.get("/gallery/search/", {"q": "fox"})
    assert response.status_code == 302 and response["Location"].startswith("/gallery/?q=fox")
    assert "gallery/search/" not in user_client.get("/gallery/").content.decode()


def test_the_selector_picks_the_backend_this_database_offers(db, settings):
    can_load = hasattr(sqlite3.Connection, "enable_load_extension")
    assert store.backend() == ("sqlite-vec" if can_load else "exact")
    settings.GALLERY_VECTOR_BACKEND = "exact"
    assert store.backend() == "exact"


def test_exact_search_ranks_by_cosine_and_respects_the_scope(library, user):
    tag = __import__("gallery.semantic.clip", fromlist=["model_tag"]).model_tag()
    query = store.vector_of(library["planted"][2].pk, tag)
    scope = Image.objects.filter(owner=user)
    got = store._exact(ImageEmbedding.objects.filter(model=tag, image_id__in=scope.values("pk")), query, 5)
    rows = ImageEmbedding.objects.filter(model=tag, image__owner=user).values_list("image_id", "vector")
    brute = sorted(((float(np.frombuffer(bytes(v), np.float32) @ query), pk) for pk, v in rows), reverse=True)[:5]
    assert [pk for pk, _ in got] == [pk for _, pk in brute]
    assert got[0][0] == library["planted"][2].pk and abs(got[0][1] - 1.0) < 1e-5


def test_sqlite_vec_distance_matches_the_exact_ranking(tmp_path):
    """The sqlite-vec SQL the selector uses, run in a Python whose sqlite3 can load extensions (this venv's
    cannot), against the real extension."""
    import sqlite_vec

    system_python = "/usr/bin/python3"
    check = subprocess.run([system_python, "-c", "import sqlite3; sqlite3.connect(':memory:').enable_load_extension"],
                           capture_output=True)
    if check.returncode != 0:
        pytest.skip("no Python with SQLite extension loading here")
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(50, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    query = vectors[7] + 0.1 * rng.normal(size=16).astype(np.float32)
    (tmp_path / "v.npy").write_bytes(vectors.tobytes())
    (tmp_path / "q.npy").write_bytes(query.astype(np.float32).tobytes())
    script = f"""
import sqlite3
c = sqlite3.connect(':memory:'); c.enable_load_extension(True); c.load_extension({sqlite_vec.loadable_path()!r})
data = open({str(tmp_path / 'v.npy')!r}, 'rb').read(); q = open({str(tmp_path / 'q.npy')!r}, 'rb').read()
c.execute('create table e (image_id integer, vector blob)')
c.executemany('insert into e values (?, ?)', [(i, data[i*64:(i+1)*64]) for i in range(50)])
print(','.join(str(r[0]) for r in c.execute(
    'select image_id, vec_distance_cosine(vector, ?) d from e order by d, image_id limit 10', (q,))))
"""
    out = subprocess.run([system_python, "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    expected = np.argsort(-(vectors @ (query / np.linalg.norm(query))), kind="stable")[:10]
    assert [int(x) for x in out.split(",")] == [int(i) for i in expected]
