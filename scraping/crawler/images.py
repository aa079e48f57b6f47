"""Image helpers of the crawl process, pure Python (Pillow only): srcset parsing and image validation."""

from __future__ import annotations

import io
import re
import warnings

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
FILE_EXTENSION = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}


class ImageRejected(Exception):
    def __init__(self, bucket: str, reason: str) -> None:
        super().__init__(reason)
        self.bucket = bucket


def parse_srcset(value: str) -> list[tuple[str, str]]:
    """(url, descriptor) pairs of a srcset, after the HTML spec: URLs may contain commas."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and (value[i].isspace() or value[i] == ","):
            i += 1
        if i >= n:
            break
        start = i
        while i < n and not value[i].isspace():
            i += 1
        url = value[start:i]
        descriptor = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            start = i
            depth = 0
            while i < n and (value[i] != "," or depth):
                depth += value[i] == "("
                depth -= value[i] == ")" and depth > 0
                i += 1
            descriptor = value[start:i].strip()
        if url:
            out.append((url, descriptor))
    return out


def best_srcset_candidate(value: str) -> str | None:
    """The largest candidate: by width descriptor ("800w"), else by density ("2x", default 1x)."""
    best: tuple[int, float, str] | None = None
    for url, descriptor in parse_srcset(value):
        kind, size = 0, 1.0
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([wx])", descriptor.split()[0].lower()) if descriptor else None
        if match:
            kind, size = (1 if match.group(2) == "w" else 0), float(match.group(1))
        key = (kind, size, url)
        if best is None or key[:2] > best[:2]:
            best = key
    return best[2] if best else None


def inspect_image(body: bytes, *, max_pixels: int, content_type: str = "") -> tuple[str, int, int]:
    """(format, width, height) of an image in an allowed format that fully decodes; ImageRejected if not."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(body), formats=ALLOWED_FORMATS) as im:
                fmt, (width, height) = im.format or "", im.size
                if width * height > max_pixels:
                    raise ImageRejected("too_many_pixels", f"{width}x{height} pixels is more than {max_pixels}")
                im.load()
        except ImageRejected:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected("too_many_pixels", str(exc)) from None
        except UnidentifiedImageError:
            served = f" (served as {content_type})" if content_type else ""
            raise ImageRejected("invalid_image", f"not a JPEG, PNG, WebP, GIF, BMP or TIFF image{served}") from None
        except Exception as exc:  # noqa: BLE001 - any decoder error means a broken file
            raise ImageRejected("invalid_image", f"the image does not decode: {exc}") from None
    if fmt not in FILE_EXTENSION:
        raise ImageRejected("invalid_image", f"format {fmt!r} is not allowed")
    return fmt, width, height
