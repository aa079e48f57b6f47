"""The local backend: NudeNet for real on generated images, and tags measured from the pixels."""

from __future__ import annotations

from importlib.metadata import version

import pytest
from PIL import Image

from labeling.backends import ERROR_CANCELLED, ERROR_IMAGE, LabelResult, get_backend
from labeling.backends.local import get_detector, nsfw_verdict, orientation_tag, size_tag


def never() -> bool:
    return False


def label(*images, should_stop=never):
    return get_backend("local").label_batch(list(images), should_stop=should_stop)


def test_a_pure_red_wide_image_is_landscape_small_and_red(make_image):
    image = make_image((800, 400), (255, 0, 0))

    result = label(image)[image.id]

    assert result == LabelResult(
        caption=None, tags=["landscape", "small", "red"], categories=[], nsfw=False,
        nsfw_confidence=result.nsfw_confidence, model="nudenet", version=version("nudenet"),
    )
    assert 0.5 <= result.nsfw_confidence <= 1.0


def test_orientation_size_and_colours_are_measured(make_image):
    portrait = make_image((300, 900), (0, 160, 60), ext="jpg")
    square = make_image((1200, 1200), (20, 40, 200), ext="webp")
    two_tone = Image.new("RGB", (1000, 600), (255, 255, 255))
    two_tone.paste((0, 0, 0), (0, 0, 1000, 200))  # a third black, two thirds white
    banner = make_image(picture=two_tone, ext="png")

    outcomes = label(portrait, square, banner)

    assert outcomes[portrait.id].tags == ["portrait", "small", "green"]
    assert outcomes[square.id].tags == ["square", "medium", "blue"]
    assert outcomes[banner.id].tags == ["landscape", "medium", "white", "black"]
    assert all(outcome.nsfw is False for outcome in outcomes.values())


def test_transparency_is_judged_on_white_and_exif_rotation_counts(make_image):
    clear = make_image((200, 200), (255, 0, 0, 0), ext="png", mode="RGBA")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 400x200, shown rotated by 90°
    rotated = make_image((400, 200), (255, 140, 0), ext="jpg", exif=exif.tobytes())

    outcomes = label(clear, rotated)

    assert outcomes[clear.id].tags == ["square", "small", "white"]
    assert outcomes[rotated.id].tags == ["portrait", "small", "orange"]


def test_gif_bmp_and_tiff_are_read(make_image):
    images = [make_image((64, 64), (255, 255, 0), ext=ext) for ext in ("gif", "bmp", "tiff")]

    outcomes = label(*images)

    assert [outcomes[image.id].tags for image in images] == [["square", "small", "yellow"]] * 3


def test_an_unreadable_file_fails_alone_and_a_cancel_stops_the_rest(make_image):
    good, broken, later = make_image(), make_image(), make_image()
    broken.path.write_bytes(b"\x89PNG but not really")
    calls = {"n": 0}

    def stop_after_two() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    outcomes = label(good, broken, later, should_stop=stop_after_two)

    assert isinstance(outcomes[good.id], LabelResult)
    assert outcomes[broken.id].code == ERROR_IMAGE
    assert outcomes[later.id].code == ERROR_CANCELLED


def test_the_detector_is_created_once():
    assert get_detector() is get_detector()


@pytest.mark.parametrize(
    ("detections", "verdict"),
    [
        ([], (False, 1.0)),
        ([{"class": "FACE_FEMALE", "score": 0.9}, {"class": "FEET_EXPOSED", "score": 0.8}], (False, 1.0)),
        ([{"class": "FEMALE_BREAST_EXPOSED", "score": 0.3}], (False, 0.7)),
        ([{"class": "FEMALE_BREAST_EXPOSED", "score": 0.3}, {"class": "BUTTOCKS_EXPOSED", "score": 0.81}],
         (True, 0.81)),
        ([{"class": "MALE_GENITALIA_EXPOSED", "score": 0.5}], (True, 0.5)),
    ],
)
def test_only_exposed_classes_make_an_image_nsfw(detections, verdict):
    assert nsfw_verdict(detections) == verdict


@pytest.mark.parametrize(
    ("size", "orientation", "size_class"),
    [
        ((800, 400), "landscape", "small"),
        ((400, 800), "portrait", "small"),
        ((1000, 1030), "square", "medium"),
        ((1000, 500), "landscape", "medium"),
        ((2000, 1000), "landscape", "large"),
        ((4000, 2000), "landscape", "large"),
        ((4000, 2001), "landscape", "huge"),
    ],
)
def test_orientation_and_size_classes(size, orientation, size_class):
    assert orientation_tag(*size) == orientation
    assert size_tag(*size) == size_class
