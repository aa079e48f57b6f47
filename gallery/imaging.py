"""Pure image handling: validation, hashing and derivatives. No database, no storage.

Everything here works on bytes so the same code serves uploads, indexing (also in
worker processes), scrapes and generated images.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import PurePath

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
MIME_TYPES = {
    "JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp",
    "GIF": "image/gif", "BMP": "image/bmp", "TIFF": "image/tiff",
}
EXTENSIONS = {
    "JPEG": {".jpg", ".jpeg", ".jpe", ".jfif"}, "PNG": {".png"}, "WEBP": {".webp"},
    "GIF": {".gif"}, "BMP": {".bmp", ".dib"}, "TIFF": {".tif", ".tiff"},
}
CANONICAL_EXTENSION = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tiff"}
_IMAGE_EXTENSIONS = set().union(*EXTENSIONS.values())
# Extensions that name something other than a raster image we accept.
_FOREIGN_EXTENSIONS = {
    ".svg", ".svgz", ".html", ".htm", ".xhtml", ".xml", ".js", ".txt", ".pdf", ".exe", ".heic", ".avif",
    ".ico", ".psd", ".php", ".zip",
}
# Markup inside image bytes means a polyglot that a browser might render as a page. Compressed pixel
# data is random-looking, so only markers long enough never to occur by chance are searched for
# (a 4-letter one like "<svg" turns up in about one photo in a hundred); plain substring search on a
# lower-cased copy is ~10x faster than one regex over megabytes.
_MARKUP_MARKERS = (b"<script", b"<iframe", b"<object", b"<embed", b"<!doctype html", b"javascript:")
_HTML_TAG = b"<html"
_TAG_END = frozenset(b" \t\r\n>/")
_MARKUP_HEAD = re.compile(rb"^\s*(?:<\?xml|<!--|<[a-z!])", re.I)
MAX_FRAMES_CHECKED = 500
# libwebp effort 0..6: 2 is about twice as fast as the default 4 for a few percent larger files.
WEBP_METHOD = 2


class ImageRejected(ValueError):
    """The file is not an image we accept; the message says why, for the person who sent it."""


@dataclass(frozen=True)
class ImageInfo:
    sha256: str
    phash: int
    width: int
    height: int
    format: str
    mime: str
    size: int
    taken_at: datetime | None = None

    @property
    def extension(self) -> str:
        return CANONICAL_EXTENSION[self.format]


@dataclass(frozen=True)
class Derivatives:
    thumbnail: bytes
    preview: bytes


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def check_extension(filename: str | None, fmt: str) -> None:
    if not filename:
        return
    ext = PurePath(filename).suffix.lower()
    if not ext:
        return
    if ext in EXTENSIONS[fmt]:
        return
    if ext in _IMAGE_EXTENSIONS or ext in _FOREIGN_EXTENSIONS:
        raise ImageRejected(f"The extension {ext} does not match the content, which is {fmt}.")


def check_size(size: int, max_bytes: int) -> None:
    """The size limit, checkable before a byte is read (uploads and indexed files know their size)."""
    if size > max_bytes:
        raise ImageRejected(f"The file is {_mb(size)}; the limit is {_mb(max_bytes)}.")


def check_bytes(data: bytes, *, max_bytes: int) -> None:
    if len(data) == 0:
        raise ImageRejected("The file is empty (0 bytes).")
    check_size(len(data), max_bytes)
    if _MARKUP_HEAD.match(data[:256]):
        raise ImageRejected("SVG, HTML and XML files are not accepted; upload JPEG, PNG, WebP, GIF, BMP or TIFF.")
    lowered = data.lower()
    if any(marker in lowered for marker in _MARKUP_MARKERS) or _has_html_tag(lowered):
        raise ImageRejected("The file contains embedded HTML or script (an image/HTML polyglot) and was refused.")


def _has_html_tag(lowered: bytes) -> bool:
    start = lowered.find(_HTML_TAG)
    while start != -1:
        following = lowered[start + len(_HTML_TAG):start + len(_HTML_TAG) + 1]
        if not following or following[0] in _TAG_END:
            return True
        start = lowered.find(_HTML_TAG, start + 1)
    return False


def _open(data: bytes, max_pixels: int) -> PILImage.Image:
    # Pillow's own bomb check runs inside open(); with warnings made errors it refuses
    # anything over our limit before a single pixel is decoded.
    PILImage.MAX_IMAGE_PIXELS = max_pixels
    try:
        return PILImage.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
        raise ImageRejected(
            f"The image has more pixels than the limit of {max_pixels / 1e6:.0f} megapixels."
        ) from None
    except UnidentifiedImageError:
        raise ImageRejected(
            "This is not an image in an accepted format (JPEG, PNG, WebP, GIF, BMP or TIFF)."
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(f"The image header is damaged: {exc}.") from None


MAX_SIDE = 30_000


def _check_dimensions(im: PILImage.Image, max_pixels: int) -> None:
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ImageRejected("The image has no pixels.")
    if max(width, height) > MAX_SIDE:
        raise ImageRejected(f"The image is {width}×{height}; no side may be longer than {MAX_SIDE} pixels.")
    if width * height > max_pixels:
        raise ImageRejected(
            f"The image is {width}×{height} ({width * height / 1e6:.0f} megapixels); "
            f"the limit is {max_pixels / 1e6:.0f} megapixels."
        )


def _check_total_pixels(im: PILImage.Image, max_total_pixels: int | None) -> None:
    """Refuse an animation whose frames together are more pixels than we will decode in a request.

    Every frame we check is decoded at the full canvas size, so the work is frames × width × height; the
    frame count comes from the container (Pillow walks GIF/TIFF frame headers without decoding pixels).
    """
    if max_total_pixels is None:
        return
    frames = min(getattr(im, "n_frames", 1), MAX_FRAMES_CHECKED)
    if frames <= 1:
        return
    width, height = im.size
    total = frames * width * height
    if total > max_total_pixels:
        raise ImageRejected(
            f"The animation has {frames} frames of {width}×{height} ({total / 1e6:.0f} megapixels in all); "
            f"the limit for all frames together is {max_total_pixels / 1e6:.0f} megapixels."
        )


def _decode_all(im: PILImage.Image, *, draft_to: int | None) -> None:
    """Decode every pixel (and every frame) so damaged or truncated files fail here, not later."""
    if draft_to and im.format == "JPEG":
        # JPEG can decode at 1/2, 1/4 or 1/8 scale; the whole stream is still read and checked.
        im.draft(im.mode if im.mode in ("RGB", "L") else None, (draft_to, draft_to))
    im.load()
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        for index in range(1, min(frames, MAX_FRAMES_CHECKED)):
            im.seek(index)
            im.load()
        im.seek(0)
        im.load()


@lru_cache(maxsize=1)
def _dct_matrix(n: int = 32) -> np.ndarray:
    k = np.arange(n)
    matrix = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))
    matrix[0] *= 1 / np.sqrt(2)
    return matrix * np.sqrt(2 / n)


def perceptual_hash(im: PILImage.Image) -> int:
    """64-bit DCT hash (the classic pHash): low frequencies of a 32×32 greyscale copy against their median."""
    small = np.asarray(im.convert("L").resize((32, 32), PILImage.Resampling.LANCZOS), dtype=np.float64)
    dct = _dct_matrix() @ small @ _dct_matrix().T
    low = dct[:8, :8].flatten()
    bits = low > np.median(low[1:])
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    # Stored in a signed 64-bit column.
    return value - (1 << 64) if value >= (1 << 63) else value


_EXIF_IFD = 0x8769
_DATE_TIME_ORIGINAL = 0x9003
_DATE_TIME_DIGITIZED = 0x9004
_DATE_TIME = 0x0132


def taken_date(im: PILImage.Image) -> datetime | None:
    """When the picture was taken, from EXIF (original, else digitized, else file date); None when absent or
    nonsense. EXIF dates carry no zone: they are read as UTC, which keeps the day the camera showed."""
    try:
        exif = im.getexif()
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:  # noqa: BLE001 - a damaged EXIF block only costs us the date
        return None
    for raw in (sub.get(_DATE_TIME_ORIGINAL), sub.get(_DATE_TIME_DIGITIZED), exif.get(_DATE_TIME)):
        if not isinstance(raw, str):
            continue
        try:
            when = datetime.strptime(raw.strip().rstrip("\x00")[:19], "%Y:%m:%d %H:%M:%S").replace(tzinfo=UTC)
        except ValueError:
            continue
        if 1900 <= when.year <= datetime.now(UTC).year + 1:
            return when
    return None


def hamming(a: int, b: int) -> int:
    return ((a ^ b) & ((1 << 64) - 1)).bit_count()


def _for_display(im: PILImage.Image) -> PILImage.Image:
    # exif_transpose always copies; most photos need no turn, and a 2 MP copy costs as much as hashing.
    if im.getexif().get(0x0112, 1) != 1:
        im = ImageOps.exif_transpose(im)
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        return im.convert("RGBA")
    return im.convert("RGB") if im.mode != "RGB" else im


def _webp(im: PILImage.Image) -> bytes:
    out = io.BytesIO()
    im.save(out, format="WEBP", quality=82, method=WEBP_METHOD)
    return out.getvalue()


def _derive(im: PILImage.Image, *, thumb_size: int, preview_size: int) -> tuple[Derivatives, PILImage.Image]:
    # May be `im` itself: thumbnail() resizes in place, and nobody needs the full-size pixels afterwards.
    preview = _for_display(im)
    preview.thumbnail((preview_size, preview_size), PILImage.Resampling.BICUBIC, reducing_gap=2.0)
    preview_bytes = _webp(preview)
    if max(preview.size) <= thumb_size:
        # Already thumbnail-sized (thumbnail() would leave the pixels as they are): the same pixels encode
        # to the same bytes, so one encode serves both (scraped images are often this small).
        return Derivatives(thumbnail=preview_bytes, preview=preview_bytes), preview
    thumb = preview.copy()
    thumb.thumbnail((thumb_size, thumb_size), PILImage.Resampling.BICUBIC, reducing_gap=2.0)
    return Derivatives(thumbnail=_webp(thumb), preview=preview_bytes), thumb


@contextlib.contextmanager
def _decode_errors_rejected():
    """Decoding errors as ImageRejected, with a message for the person who sent the file."""
    try:
        yield
    except ImageRejected:
        raise
    except (PILImage.DecompressionBombWarning, PILImage.DecompressionBombError) as exc:
        raise ImageRejected(f"The image is too large to decode safely ({exc}).") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, MemoryError) as exc:
        raise ImageRejected(f"The image is damaged or truncated ({exc}).") from None


def inspect_image(
    data: bytes,
    *,
    filename: str | None = None,
    max_bytes: int,
    max_pixels: int,
    max_total_pixels: int | None = None,
    derivatives: bool = False,
    thumb_size: int = 300,
    preview_size: int = 1280,
) -> tuple[ImageInfo, Derivatives | None]:
    """Validate `data` completely and describe it; optionally make the WebP derivatives from the same decode.

    `max_pixels` bounds one frame; `max_total_pixels` (None: no bound) all the frames decoded together.
    Raises ImageRejected with a message for the person who sent the file.
    """
    check_bytes(data, max_bytes=max_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PILImage.DecompressionBombWarning)
        im = _open(data, max_pixels)
        with im:
            fmt = im.format
            if fmt not in ALLOWED_FORMATS:
                raise ImageRejected(f"{fmt} images are not accepted.")
            check_extension(filename, fmt)
            _check_dimensions(im, max_pixels)
            width, height = im.size
            taken_at = taken_date(im)
            with _decode_errors_rejected():
                _check_total_pixels(im, max_total_pixels)
                _decode_all(im, draft_to=preview_size if derivatives else None)
                if derivatives:
                    made, small = _derive(im, thumb_size=thumb_size, preview_size=preview_size)
                else:
                    made, small = None, im
                phash = perceptual_hash(small)
    info = ImageInfo(
        sha256=hashlib.sha256(data).hexdigest(), phash=phash, width=width, height=height,
        format=fmt, mime=MIME_TYPES[fmt], size=len(data), taken_at=taken_at,
    )
    return info, made


def make_derivatives(data: bytes, *, thumb_size: int = 300, preview_size: int = 1280) -> Derivatives:
    """Thumbnail and preview from one (draft-mode) decode of already validated bytes."""
    with PILImage.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as im:
        if im.format == "JPEG":
            im.draft(im.mode if im.mode in ("RGB", "L") else None, (preview_size, preview_size))
        im.load()
        made, _ = _derive(im, thumb_size=thumb_size, preview_size=preview_size)
    return made


def full_size_display(data: bytes, *, max_pixels: int) -> tuple[bytes, str]:
    """The image at its own pixel size, re-encoded for showing inline: (bytes, content type).

    Originals are never served inline (a hostile file stays a download); this is a fresh encode of the
    decoded pixels, turned as its EXIF orientation says, first frame only, with no metadata. JPEG sources
    become a quality-95 JPEG, everything else a PNG (lossless), so zooming to 100% shows what the file holds.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", PILImage.DecompressionBombWarning)
        im = _open(data, max_pixels)
        with im:
            _check_dimensions(im, max_pixels)
            source_format = im.format
            with _decode_errors_rejected():
                im.load()
                shown = _for_display(im)
                out = io.BytesIO()
                if source_format == "JPEG" and shown.mode == "RGB":
                    shown.save(out, format="JPEG", quality=95)
                    return out.getvalue(), "image/jpeg"
                shown.save(out, format="PNG", compress_level=1)  # fast: it is made on request
                return out.getvalue(), "image/png"
