"""Buckets, the reproducible batch order, preprocessing and checkpoint bookkeeping (no model needed)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from PIL import Image

from training.ml import checkpoints as ckpt
from training.ml.data import BatchPlan, make_buckets, nearest_bucket, prepare_example, read_examples


def test_buckets_keep_the_pixel_budget_and_multiple():
    buckets = make_buckets(512, 64)

    assert (512, 512) in buckets
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 for w, h in buckets)
    assert all(max(w, h) / min(w, h) <= 2 for w, h in buckets)
    assert nearest_bucket((1920, 1080), buckets)[0] > nearest_bucket((1920, 1080), buckets)[1]
    assert nearest_bucket((1080, 1920), buckets)[0] < nearest_bucket((1080, 1920), buckets)[1]
    assert nearest_bucket((700, 700), buckets) == (512, 512)


def test_images_go_to_buckets_matching_their_shape(tiny_dataset):
    examples = read_examples(tiny_dataset, resolution=32, multiple=8, use_buckets=True)
    by_name = {e.path.stem: e.bucket for e in examples}

    assert by_name["red"][0] > by_name["red"][1]  # 48x32 is landscape
    assert by_name["blue"][0] < by_name["blue"][1]
    assert by_name["green"] == (32, 32)
    square = read_examples(tiny_dataset, resolution=32, multiple=8, use_buckets=False)
    assert {e.bucket for e in square} == {(32, 32)}


def test_a_missing_training_image_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.png"):
        read_examples([(tmp_path / "gone.png", "x")], resolution=32, multiple=8, use_buckets=True)


def test_the_batch_order_is_a_function_of_seed_and_epoch(tiny_dataset):
    examples = read_examples(tiny_dataset * 3, resolution=32, multiple=8, use_buckets=True)
    plan = BatchPlan(examples, batch_size=2, seed=3)
    fresh = BatchPlan(examples, batch_size=2, seed=3)

    first_epoch = [plan.batch_at(p)[1] for p in range(plan.batches_per_epoch)]
    assert sorted(i for batch in first_epoch for i in batch) == list(range(len(examples)))
    assert all(len({examples[i].bucket for i in batch}) == 1 for batch in first_epoch)
    # Jumping straight to a later position (as a resume does) gives the same batch as walking there.
    position = plan.batches_per_epoch * 2 + 1
    assert fresh.batch_at(position) == plan.batch_at(position)
    assert plan.epoch_batches(0) != plan.epoch_batches(1)
    assert BatchPlan(examples, batch_size=2, seed=4).epoch_batches(0) != plan.epoch_batches(0)


def test_preprocessing_crops_to_the_bucket_and_is_reproducible(tmp_path):
    path = tmp_path / "half.png"
    image = Image.new("RGB", (64, 32), "black")
    image.paste((255, 255, 255), (0, 0, 32, 32))  # left half white
    image.save(path)
    (example,) = read_examples([(path, "caption")], resolution=32, multiple=8, use_buckets=False)

    centre = prepare_example(example, rng=random.Random(0), center_crop=True, random_flip=False, caption_dropout=0)
    assert tuple(centre.pixels.shape) == (3, 32, 32)
    assert centre.crop_top_left == (0, 16)
    assert centre.original_size == (32, 64)
    args = dict(center_crop=False, random_flip=True, caption_dropout=0.5)
    runs = [prepare_example(example, rng=random.Random(s), **args) for s in range(12)]
    again = [prepare_example(example, rng=random.Random(s), **args) for s in range(12)]
    assert all((a.pixels == b.pixels).all() and a.caption == b.caption for a, b in zip(runs, again))
    assert {r.caption for r in runs} == {"", "caption"}
    assert len({r.crop_top_left for r in runs}) > 1
    dropped = prepare_example(example, rng=random.Random(0), center_crop=True, random_flip=False, caption_dropout=1)
    assert dropped.caption == ""


def test_checkpoints_are_written_whole_and_pruned(tmp_path):
    def files(folder: Path) -> None:
        (folder / "weights.bin").write_bytes(b"x")

    for step in (1, 2, 3, 4):
        ckpt.write_checkpoint(tmp_path, step, write_files=files, state={"position": step}, keep=2)

    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-000003", "step-000004"]
    assert ckpt.read_state(ckpt.latest_checkpoint(tmp_path)) == {"position": 4, "step": 4}

    def crash(folder: Path) -> None:
        (folder / "partial").write_bytes(b"x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        ckpt.write_checkpoint(tmp_path, 5, write_files=crash, state={}, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000003", "step-000004"]
    stale = tmp_path / "checkpoints" / ".tmp-step-000009-abc"
    stale.mkdir()
    ckpt.remove_temporary(tmp_path)
    assert not stale.exists()
