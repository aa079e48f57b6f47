"""The dataset check finds each planted problem, on the new-run page and the run page; warnings never block."""

from __future__ import annotations

import io

import pytest

from gallery import services as gallery_services
from labeling.services import caption_set
from training.runs import services
from training.runs.dataset_check import check_run, check_snapshot

pytestmark = pytest.mark.usefixtures("media_root", "training_dirs")


def _png(size, seed=0, scale=1):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    out = io.BytesIO()
    small.resize(size, Image.Resampling.BICUBIC).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def planted(user, ingest):
    """An album with one image of each problem, and two clean ones."""
    album = gallery_services.album_create(owner=user, name="Planted")

    def add(name, size, seed, caption="a picture, red"):
        image = ingest(user, _png(size, seed), filename=f"{name}.png", album=album)
        if caption is not None:
            caption_set(image=image, user=user, text=caption)
        return image

    images = {
        "clean": add("clean", (64, 64), 1),
        "clean2": add("clean2", (64, 64), 2),
        "small": add("small", (16, 16), 3),
        "wide": add("wide", (192, 48), 4),
        "uncaptioned": add("uncaptioned", (64, 64), 5, caption=None),
        "near": add("near", (60, 60), 1),  # the clean picture, resized
        "tagged": add("tagged", (64, 64), 6, caption="zqx, a picture"),
    }
    return album, images


def _codes(warnings):
    return {w.code: w for w in warnings}


def test_each_planted_problem_is_found(user, planted):
    album, images = planted
    snapshot = services.dataset_snapshot(user=user, albums=[album])
    warnings = _codes(check_snapshot(snapshot, resolution=32, steps=10, trigger_word="zqx"))

    assert warnings["below_resolution"].image_ids == [images["small"].pk]
    assert warnings["extreme_aspect"].image_ids == [images["wide"].pk]
    assert warnings["missing_caption"].image_ids == [images["uncaptioned"].pk]
    assert "album's name" in warnings["missing_caption"].message
    assert warnings["near_duplicates"].image_ids == [images["near"].pk]
    lacking = set(warnings["no_trigger"].image_ids)
    assert images["tagged"].pk not in lacking and images["clean"].pk in lacking
    assert "zqx" in warnings["no_trigger"].message
    assert not {"few_images", "too_many_repeats", "exact_duplicates", "empty_caption"} & set(warnings)


def test_exact_duplicates_empty_captions_few_images_and_too_many_steps(user, planted):
    album, images = planted
    snapshot = services.dataset_snapshot(user=user, albums=[album])
    copy = {**snapshot[0], "image_id": 999_999}  # a staff run over two users' albums can hold the same file twice
    empty = {**snapshot[1], "caption": " "}
    warnings = _codes(check_snapshot([snapshot[0], copy, empty], resolution=32, steps=1000, batch_size=2))

    assert warnings["exact_duplicates"].image_ids == [999_999]
    assert warnings["empty_caption"].image_ids == [snapshot[1]["image_id"]]
    assert "Only 3 images" in warnings["few_images"].message
    assert "about 667 times" in warnings["too_many_repeats"].message
    clean = services.dataset_snapshot(user=user, albums=[album])
    assert not {"few_images", "too_many_repeats"} & set(_codes(check_snapshot(clean, resolution=32, steps=100)))


def test_the_new_run_page_and_the_run_page_show_the_warnings(user, user_client, planted, unloaded_model):
    album, images = planted
    query = {"albums": [album.pk], "base_model": "tiny", "steps": "10", "batch_size": "1", "resolution": "32",
             "trigger_word": "zqx"}
    partial = user_client.get("/training/runs/new/estimate/", query).content.decode()
    assert "Dataset check" in partial and 'data-code="below_resolution"' in partial
    assert f"/gallery/images/{images['small'].pk}/" in partial and 'data-code="no_trigger"' in partial

    page = user_client.get(f"/training/runs/new/?album={album.pk}").content.decode()
    assert 'data-code="near_duplicates"' in page

    run = services.run_create(owner=user, album_ids=[album.pk], enqueue=False,
                              params={"steps": 10, "resolution": 32, "trigger_word": "zqx"})
    assert {w.code for w in check_run(run)} >= {"below_resolution", "extreme_aspect", "missing_caption",
                                                 "near_duplicates", "no_trigger"}
    detail = user_client.get(run.get_absolute_url()).content.decode()
    assert 'data-code="extreme_aspect"' in detail and "the run can still start" in detail
