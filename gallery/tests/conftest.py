import pytest

from imagineer.testing import image_bytes, stored_files  # noqa: F401 - re-exported for the gallery tests


@pytest.fixture(autouse=True)
def _isolated_media(media_root):
    """Every gallery test stores files in its own folder."""
    return media_root


@pytest.fixture
def make_image_bytes():
    return image_bytes
