"""`local`, the offline default: NudeNet for NSFW, plus tags measured from the pixels.

No captions are invented (caption is None): the tags are facts about the file — orientation,
size class and dominant colour names — and the NSFW verdict comes from NudeNet's detector
(the 320n ONNX model shipped inside the package), created once per process on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cache

from .base import (
    ERROR_CANCELLED,
    ERROR_IMAGE,
    BackendUnavailable,
    ImageInput,
    LabelError,
    LabelOutcome,
    LabelResult,
)

# NudeNet classes that make an image NSFW; covered parts, faces, feet, bellies and the like do not.
EXPLICIT_CLASSES = frozenset({
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "BUTTOCKS_EXPOSED",
    "ANUS_EXPOSED",
})
NSFW_THRESHOLD = 0.5

# Size classes by pixel count (upper bounds, exclusive except for "large").
SMALL_MAX_PIXELS = 500_000
MEDIUM_MAX_PIXELS = 2_000_000
LARGE_MAX_PIXELS = 8_000_000
SQUARE_TOLERANCE = 0.05  # |w/h - 1| within this is square

# Colour names by hue (degrees, upper bounds); see colour_names() for black, white, gray and brown.
HUE_NAMES = (
    (15, "red"), (40, "orange"), (70, "yellow"), (165, "green"), (195, "cyan"),
    (260, "blue"), (320, "purple"), (345, "pink"), (360, "red"),
)
COLOUR_NAMES = ("black", "white", "gray", "brown", *dict.fromkeys(name for _, name in HUE_NAMES))
COLOUR_MIN_SHARE = 0.15  # a second or third colour must cover at least this much of the image
MAX_COLOURS = 3
_SAMPLE_SIZE = 64
_DETECT_SIZE = 640  # NudeNet works at 320 px; a smaller copy makes its pre-processing cheap

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

_detector = None
_detector_lock = threading.Lock()


def get_detector():
    """The process-wide NudeDetector, created on first use (loading the model takes a moment)."""
    global _detector
    with _detector_lock:
        if _detector is None:
            # nudenet (and onnxruntime under it) is imported here only: the web process never needs it.
            from nudenet import NudeDetector

            _detector = NudeDetector()
    return _detector


@cache
def nudenet_version() -> str:
    from importlib.metadata import version

    return version("nudenet")


def orientation_tag(width: int, height: int) -> str:
    if height <= 0 or abs(width / height - 1) <= SQUARE_TOLERANCE:
        return "square"
    return "landscape" if width > height else "portrait"


def size_tag(width: int, height: int) -> str:
    pixels = width * height
    if pixels < SMALL_MAX_PIXELS:
        return "small"
    if pixels < MEDIUM_MAX_PIXELS:
        return "medium"
    if pixels <= LARGE_MAX_PIXELS:
        return "large"
    return "huge"


def colour_names(rgb):
    """The colour name of each pixel of an (N, 3) 0..255 array, from hue, saturation and value."""
    import numpy as np

    c = np.asarray(rgb, dtype=np.float64) / 255.0
    high, low = c.max(axis=1), c.min(axis=1)
    chroma = high - low
    saturation = np.where(high > 0, chroma / np.where(high > 0, high, 1), 0)
    safe = np.where(chroma > 0, chroma, 1)
    r, g, b = c[:, 0], c[:, 1], c[:, 2]
    hue = np.select(
        [chroma == 0, high == r, high == g],
        [0.0, ((g - b) / safe) % 6, (b - r) / safe + 2],
        (r - g) / safe + 4,
    ) * 60.0
    bounds = np.array([bound for bound, _ in HUE_NAMES])
    names = np.array([name for _, name in HUE_NAMES], dtype=object)[np.searchsorted(bounds, hue, side="right").clip(
        max=len(bounds) - 1)]
    light_red = ((hue < 15) | (hue >= 345)) & (saturation < 0.5) & (high > 0.75)
    names = np.where(light_red, "pink", names)
    # Dark or muted orange and yellow read as brown (tan, chocolate, wood).
    dark_warm = (hue >= 15) & (hue < 70) & (high < 0.6) & (saturation > 0.25)
    muted_orange = (hue >= 15) & (hue < 45) & (high < 0.8) & (saturation > 0.25) & (saturation < 0.65)
    names = np.where(dark_warm | muted_orange, "brown", names)
    names = np.where(saturation < 0.15, np.where(high > 0.85, "white", "gray"), names)
    names = np.where(high < 0.2, "black", names)
    return names


def dominant_colours(picture) -> list[str]:
    """Names of the 1-3 colours covering most of an RGB Pillow image."""
    import numpy as np
    from PIL import Image

    sample = picture.copy()
    sample.thumbnail((_SAMPLE_SIZE, _SAMPLE_SIZE), Image.Resampling.BOX)
    names = colour_names(np.asarray(sample).reshape(-1, 3))
    values, counts = np.unique(names, return_counts=True)
    ranked = sorted(zip(values.tolist(), (counts / len(names)).tolist(), strict=True), key=lambda x: x[1], reverse=True)
    return [name for rank, (name, share) in enumerate(ranked[:MAX_COLOURS]) if rank == 0 or share >= COLOUR_MIN_SHARE]


def nsfw_verdict(detections: list[dict]) -> tuple[bool, float]:
    """(nsfw, confidence in that verdict) from NudeNet detections."""
    score = max((float(d["score"]) for d in detections if d.get("class") in EXPLICIT_CLASSES), default=0.0)
    if score >= NSFW_THRESHOLD:
        return True, round(score, 4)
    return False, round(1.0 - score, 4)


def _open_rgb(path, *, max_side: int | None = _DETECT_SIZE):
    """(width, height, RGB picture) with EXIF orientation applied and transparency flattened on white.

    `max_side` shrinks the picture (and lets a JPEG decode smaller); None keeps every pixel."""
    from PIL import Image, ImageOps

    with Image.open(path, formats=ALLOWED_FORMATS) as source:
        width, height = source.size  # the header's size: draft() below may decode a JPEG smaller
        if source.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientations that turn by 90°
            width, height = height, width
        if max_side:
            source.draft("RGB", (max_side, max_side))
        picture = ImageOps.exif_transpose(source)
        if picture.mode in ("RGBA", "LA", "PA", "P") and (picture.mode != "P" or "transparency" in picture.info):
            rgba = picture.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            picture = flat
        else:
            picture = picture.convert("RGB")
        if max_side:
            picture.thumbnail((max_side, max_side))
    return width, height, picture


def label_each(images: list[ImageInput], should_stop: Callable[[], bool],
               label_one: Callable[[ImageInput, int, int, object], LabelOutcome], *, verb: str,
               max_side: int | None = _DETECT_SIZE) -> dict[int, LabelOutcome]:
    """The offline backends' loop: stop between images when asked ("cancelled before <verb>"), fail only the
    image whose file cannot be read, else take `label_one(image, width, height, picture)`'s outcome."""
    outcomes: dict[int, LabelOutcome] = {}
    for image in images:
        if should_stop():
            outcomes[image.id] = LabelError(f"cancelled before {verb}", ERROR_CANCELLED)
            continue
        try:
            width, height, picture = _open_rgb(image.path, max_side=max_side)
        except Exception as exc:  # missing file, decode error, decompression bomb
            outcomes[image.id] = LabelError(f"image file {image.path} cannot be read: {exc}", ERROR_IMAGE)
            continue
        outcomes[image.id] = label_one(image, width, height, picture)
    return outcomes


class LocalBackend:
    name = "local"

    def check(self) -> None:
        try:
            get_detector()
        except Exception as exc:  # ImportError, a missing or broken model file
            raise BackendUnavailable(f"The local backend cannot load NudeNet: {exc}") from exc

    def label_batch(
        self, images: list[ImageInput], *, should_stop: Callable[[], bool]
    ) -> dict[int, LabelOutcome]:
        import numpy as np

        if not images:
            return {}
        self.check()
        detector = get_detector()
        version = nudenet_version()

        def label_one(image, width, height, picture) -> LabelOutcome:
            # NudeNet takes OpenCV's BGR order.
            detections = detector.detect(np.ascontiguousarray(np.asarray(picture)[:, :, ::-1]))
            nsfw, confidence = nsfw_verdict(detections)
            tags = [orientation_tag(width, height), size_tag(width, height), *dominant_colours(picture)]
            return LabelResult(
                caption=None,
                tags=list(dict.fromkeys(tags)),
                categories=[],
                nsfw=nsfw,
                nsfw_confidence=confidence,
                model="nudenet",
                version=version,
            )

        return label_each(images, should_stop, label_one, verb="labelling")
