"""A hostile-file corpus generated here: every bad file gets a clear error and leaves nothing behind."""

import io
import struct
import zlib

import pytest
from PIL import Image as PILImage

from gallery.imaging import ImageRejected, hamming, inspect_image
from gallery.models import Image
from gallery.services import image_ingest
from gallery.tests.conftest import image_bytes, stored_files

LIMITS = {"max_bytes": 5 * 1024 * 1024, "max_pixels": 50_000_000}


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming huge dimensions with a tiny compressed body."""
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    rows = zlib.compress(b"\x00" * ((width + 7) // 8 + 1) * 64)
    return b"\x89PNG\r\n\x1a\n" + header + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def hostile_corpus() -> dict[str, tuple[str, bytes, str]]:
    jpeg = image_bytes("JPEG", size=(200, 150))
    png = image_bytes("PNG", size=(64, 64))
    polyglot_png = png[:-12] + _png_chunk(b"tEXt", b"Comment\x00<html><script>alert(1)</script></html>") + png[-12:]
    return {
        "text": ("notes.txt", b"just some text, not an image\n" * 10, "not an image"),
        "zero": ("empty.jpg", b"", "empty"),
        "truncated": ("cut.jpg", jpeg[: len(jpeg) // 2], "damaged or truncated"),
        "garbage_jpeg": ("noise.jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20, "not an image"),
        "svg": ("logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "SVG"),
        "svg_as_png": ("logo.png", b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        "html": ("page.jpg", b"<!DOCTYPE html><html><body>hi</body></html>", "HTML"),
        "html_png_polyglot": ("poly.png", polyglot_png, "polyglot"),
        "png_then_html": ("poly2.png", png + b"<html><script>alert(1)</script></html>", "polyglot"),
        "bomb": ("bomb.png", _bomb_png(20000, 20000), "megapixels"),
        "huge_dimensions": ("wide.png", _bomb_png(40000, 500), "no side may be longer"),
        "wrong_extension": ("photo.jpg", png, "does not match"),
        "pdf": ("doc.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "not an image"),
        "ico": ("icon.png", _ico(), "not an image"),
    }


def _ico() -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (16, 16), "red").save(out, format="ICO")
    return out.getvalue()


@pytest.mark.parametrize("case", sorted(hostile_corpus()))
def test_it_rejects_each_hostile_file_with_a_clear_message(case):
    filename, data, expected = hostile_corpus()[case]
    with pytest.raises(ImageRejected) as info:
        inspect_image(data, filename=filename, **LIMITS)
    assert expected.lower() in str(info.value).lower(), str(info.value)


@pytest.mark.parametrize("case", sorted(hostile_corpus()))
def test_a_rejected_file_leaves_no_row_and_no_file(case, user, media_root):
    filename, data, _ = hostile_corpus()[case]
    with pytest.raises(ImageRejected):
        image_ingest(owner=user, data=data, filename=filename)
    assert Image.objects.count() == 0
    assert stored_files(media_root) == []


def test_oversize_files_are_refused_before_decoding():
    data = image_bytes("PNG", size=(64, 64))
    with pytest.raises(ImageRejected, match="the limit is"):
        inspect_image(data, max_bytes=100, max_pixels=10**8)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_every_allowed_format_is_accepted_and_described(fmt):
    data = image_bytes(fmt, size=(120, 80))
    info, derivatives = inspect_image(data, filename=f"x.{fmt.lower()}", derivatives=True, **LIMITS)
    assert (info.format, info.width, info.height, info.size) == (fmt, 120, 80, len(data))
    assert derivatives.thumbnail[:4] == b"RIFF" and derivatives.thumbnail[8:12] == b"WEBP"
    thumb = PILImage.open(io.BytesIO(derivatives.thumbnail))
    assert thumb.format == "WEBP" and max(thumb.size) <= 300


def test_derivatives_keep_aspect_and_size_limits():
    data = image_bytes("JPEG", size=(1600, 1200))
    _, derivatives = inspect_image(data, derivatives=True, **LIMITS)
    preview = PILImage.open(io.BytesIO(derivatives.preview))
    thumb = PILImage.open(io.BytesIO(derivatives.thumbnail))
    assert preview.size == (1280, 960)
    assert thumb.size == (300, 225)


def test_exif_orientation_is_applied_to_derivatives():
    im = PILImage.new("RGB", (200, 100), "blue")
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90° on display
    out = io.BytesIO()
    im.save(out, format="JPEG", exif=exif.tobytes())
    _, derivatives = inspect_image(out.getvalue(), derivatives=True, **LIMITS)
    assert PILImage.open(io.BytesIO(derivatives.preview)).size == (100, 200)


def test_an_extensionless_name_is_fine():
    inspect_image(image_bytes("PNG"), filename="download", **LIMITS)


def test_perceptual_hash_is_stable_under_reencoding_and_differs_between_pictures():
    original = image_bytes("PNG", size=(400, 300), seed=3)
    reencoded = io.BytesIO()
    PILImage.open(io.BytesIO(original)).resize((300, 225)).save(reencoded, format="JPEG", quality=70)
    other = image_bytes("PNG", size=(400, 300), seed=99)
    a = inspect_image(original, **LIMITS)[0].phash
    b = inspect_image(reencoded.getvalue(), **LIMITS)[0].phash
    c = inspect_image(other, **LIMITS)[0].phash
    assert hamming(a, b) <= 6
    assert hamming(a, c) > 12


def _noisy_photo(seed: int) -> bytes:
    import numpy as np

    rng = np.random.default_rng(seed)
    base = PILImage.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((1600, 1200))
    noisy = np.asarray(base).astype(np.int16) + rng.normal(0, 8, (1200, 1600, 3)).astype(np.int16)
    out = io.BytesIO()
    PILImage.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=88)
    return out.getvalue()


def test_photos_are_not_mistaken_for_polyglots():
    """Compressed pixel data is random-looking: short tag-like byte runs occur in it by chance."""
    photo = _noisy_photo(226)  # its entropy-coded data happens to contain a 4-letter tag-like run
    inspect_image(photo, **{**LIMITS, "max_bytes": 10 * 1024 * 1024})
    for chance in (b"<svg", b"<img ", b"<meta ", b"<body", b"<htmlx"):
        inspect_image(image_bytes("PNG", size=(64, 64)) + b"\x00" + chance + b"\x00", **LIMITS)
    with pytest.raises(ImageRejected, match="polyglot"):
        inspect_image(image_bytes("PNG") + b"<HTML>", **LIMITS)


def _animated_gif(frames: int, size: tuple[int, int]) -> bytes:
    pictures = [PILImage.new("RGB", size, (n * 12 % 256, 40, 200)) for n in range(frames)]
    out = io.BytesIO()
    pictures[0].save(out, format="GIF", save_all=True, append_images=pictures[1:])
    return out.getvalue()


def test_an_animation_is_bounded_by_the_pixels_of_all_its_frames_together(settings, user, media_root):
    data = _animated_gif(20, (64, 48))  # 20 frames × 3,072 pixels = 61,440
    assert PILImage.open(io.BytesIO(data)).n_frames == 20
    assert inspect_image(data, max_total_pixels=61_440, **LIMITS)[0].format == "GIF"
    with pytest.raises(ImageRejected, match=r"20 frames of 64×48 .*limit for all frames together"):
        inspect_image(data, max_total_pixels=61_439, **LIMITS)
    # A still image is bounded by max_pixels alone.
    inspect_image(image_bytes("PNG", size=(300, 300)), max_total_pixels=61_439, **LIMITS)

    settings.GALLERY_MAX_TOTAL_FRAME_PIXELS = 50_000
    with pytest.raises(ImageRejected, match="all frames together"):
        image_ingest(owner=user, data=data, filename="loop.gif")
    assert Image.objects.count() == 0 and stored_files(media_root) == []
    settings.GALLERY_MAX_TOTAL_FRAME_PIXELS = 100_000
    assert image_ingest(owner=user, data=data, filename="loop.gif").image.format == "GIF"
