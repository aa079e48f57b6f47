"""Training data: aspect-ratio buckets, a reproducible batch order, and per-image preprocessing.

Every random choice (batch order, crop offset, flip, caption dropout) is derived from the run's seed and
the batch's position in the stream, never from a global RNG. That is what makes a resumed run see exactly
the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Bucket = tuple[int, int]  # (width, height) in pixels


@dataclass(frozen=True)
class Example:
    path: Path
    caption: str
    original_size: tuple[int, int]  # (width, height) of the file
    bucket: Bucket


@dataclass(frozen=True)
class Prepared:
    """One preprocessed image, ready to stack into a batch."""

    pixels: Any  # float tensor (3, H, W) in [-1, 1]
    caption: str
    original_size: tuple[int, int]  # (height, width), the order SDXL's size conditioning uses
    crop_top_left: tuple[int, int]  # (top, left) in the resized image


def make_buckets(resolution: int, multiple: int, *, max_ratio: float = 2.0) -> list[Bucket]:
    """Sizes with about resolution² pixels, sides a multiple of `multiple`, aspect ratio up to max_ratio."""
    area = resolution * resolution
    buckets = {(resolution, resolution)}
    width = multiple
    while width <= resolution * max_ratio:
        height = (area // width) // multiple * multiple
        if height >= multiple and max(width, height) / min(width, height) <= max_ratio:
            buckets.add((width, height))
        width += multiple
    return sorted(buckets)


def nearest_bucket(size: tuple[int, int], buckets: Sequence[Bucket]) -> Bucket:
    """The bucket whose aspect ratio is closest to the image's (compared in log space, so 2:1 ~ 1:2)."""
    ratio = math.log(size[0] / size[1])
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - ratio), -b[0] * b[1]))


def read_examples(
    dataset: Sequence[tuple[Path, str]], *, resolution: int, multiple: int, use_buckets: bool
) -> list[Example]:
    """Read each image's size (header only) and give it a bucket; a square crop when buckets are off."""
    # Pillow is only needed when a training run starts.
    from PIL import Image

    buckets = make_buckets(resolution, multiple) if use_buckets else [(resolution, resolution)]
    examples = []
    for path, caption in dataset:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Training image {path} does not exist.")
        with Image.open(path) as img:
            size = _upright_size(img)
        examples.append(Example(path, caption, size, nearest_bucket(size, buckets)))
    return examples


def _upright_size(img: Any) -> tuple[int, int]:
    # A photo rotated by EXIF orientation 5-8 is trained (and bucketed) upright, so width and height swap.
    orientation = img.getexif().get(0x0112, 1)
    return (img.height, img.width) if orientation in (5, 6, 7, 8) else (img.width, img.height)


def dataset_fingerprint(dataset: Sequence[tuple[Path, str]]) -> str:
    """Identifies the dataset (files and captions) so a resumed run can tell it changed."""
    digest = hashlib.sha256()
    for path, caption in dataset:
        digest.update(f"{Path(path).resolve()}\0{caption}\0".encode())
    return digest.hexdigest()[:16]


class BatchPlan:
    """An endless, reproducible stream of batches: position n is always the same batch for a seed.

    Each epoch groups images by bucket, shuffles inside each bucket and then shuffles the batches, all
    from Random(seed, epoch), so the order for any epoch can be recomputed without replaying earlier ones.
    """

    def __init__(self, examples: Sequence[Example], *, batch_size: int, seed: int) -> None:
        if not examples:
            raise ValueError("The dataset is empty.")
        self.examples = list(examples)
        self.batch_size = batch_size
        self.seed = seed
        self._groups: dict[Bucket, list[int]] = {}
        for index, example in enumerate(self.examples):
            self._groups.setdefault(example.bucket, []).append(index)
        self.batches_per_epoch = sum(math.ceil(len(g) / batch_size) for g in self._groups.values())
        self._epoch_cache: tuple[int, list[list[int]]] | None = None

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        if self._epoch_cache and self._epoch_cache[0] == epoch:
            return self._epoch_cache[1]
        rng = random.Random(f"order:{self.seed}:{epoch}")
        batches: list[list[int]] = []
        for bucket in sorted(self._groups):
            indices = list(self._groups[bucket])
            rng.shuffle(indices)
            batches.extend(indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size))
        rng.shuffle(batches)
        self._epoch_cache = (epoch, batches)
        return batches

    def batch_at(self, position: int) -> tuple[int, list[int]]:
        """(epoch, example indices) of the batch at this position of the stream."""
        epoch, offset = divmod(position, self.batches_per_epoch)
        return epoch, self.epoch_batches(epoch)[offset]


@dataclass(frozen=True)
class Layout:
    """Where one image of one batch is cut from and which caption it gets: decided without reading pixels."""

    resized: tuple[int, int]  # (width, height) the image is resized to before cropping
    top: int
    left: int  # in the unflipped resized frame
    flip: bool
    caption: str


@dataclass(frozen=True)
class CaptionOptions:
    trigger_word: str = ""
    shuffle_tags: bool = False
    keep_tags: int = 0


def plan_example(
    example: Example,
    *,
    rng: random.Random,
    center_crop: bool,
    random_flip: bool,
    caption_dropout: float,
    captions: CaptionOptions | None = None,
) -> Layout:
    """The random choices of one sample (crop, flip, caption), in a fixed draw order from its own RNG."""
    width, height = example.bucket
    orig_w, orig_h = example.original_size
    scale = max(width / orig_w, height / orig_h)
    resized_w, resized_h = max(width, round(orig_w * scale)), max(height, round(orig_h * scale))
    if center_crop:
        left, top = (resized_w - width) // 2, (resized_h - height) // 2
    else:
        left, top = rng.randint(0, resized_w - width), rng.randint(0, resized_h - height)
    flip = random_flip and rng.random() < 0.5
    dropped = caption_dropout > 0 and rng.random() < caption_dropout
    caption = "" if dropped else shape_caption(example.caption, rng, captions or CaptionOptions())
    return Layout((resized_w, resized_h), top, left, flip, caption)


def shape_caption(caption: str, rng: random.Random, options: CaptionOptions) -> str:
    """Shuffle the tags after the first `keep_tags` (when asked), then put the trigger word first if missing."""
    tags = [t.strip() for t in caption.split(",") if t.strip()]
    if options.shuffle_tags and len(tags) > options.keep_tags + 1:
        rest = tags[options.keep_tags :]
        rng.shuffle(rest)
        tags = tags[: options.keep_tags] + rest
        caption = ", ".join(tags)
    trigger = options.trigger_word.strip()
    if trigger and trigger.lower() not in (t.lower() for t in tags):
        caption = f"{trigger}, {caption}" if caption.strip() else trigger
    return caption


def load_pixels(example: Example, layout: Layout) -> Any:
    """The float tensor (3, H, W) in [-1, 1] of a planned sample."""
    # Pillow, numpy and torch are only needed inside a training run.
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    width, height = example.bucket
    with Image.open(example.path) as raw:
        img = ImageOps.exif_transpose(raw).convert("RGB")
    img = img.resize(layout.resized, Image.Resampling.BICUBIC)
    img = img.crop((layout.left, layout.top, layout.left + width, layout.top + height))
    if layout.flip:
        img = ImageOps.mirror(img)
    array = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def prepared_from(example: Example, layout: Layout, pixels: Any) -> Prepared:
    # SDXL conditions on where the crop sits in the unflipped frame.
    left = layout.resized[0] - example.bucket[0] - layout.left if layout.flip else layout.left
    original_hw = (example.original_size[1], example.original_size[0])
    return Prepared(pixels, layout.caption, original_hw, (layout.top, left))


def prepare_example(
    example: Example,
    *,
    rng: random.Random,
    center_crop: bool,
    random_flip: bool,
    caption_dropout: float,
    captions: CaptionOptions | None = None,
) -> Prepared:
    """Load, resize to cover the bucket, crop (centre or random), maybe flip, maybe drop the caption."""
    layout = plan_example(example, rng=rng, center_crop=center_crop, random_flip=random_flip,
                          caption_dropout=caption_dropout, captions=captions)
    return prepared_from(example, layout, load_pixels(example, layout))


def sample_rng(seed: int, position: int, slot: int) -> random.Random:
    """The RNG for one image of one batch: fixed by (seed, position in the stream, index in the batch)."""
    return random.Random(f"sample:{seed}:{position}:{slot}")
