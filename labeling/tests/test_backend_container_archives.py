"""The tars claude-docker uploads end at their end-of-archive marker (no engine needed).

Podman's archive endpoint pipes an upload into an extractor that stops reading at the two zero
blocks; the record padding Python's tarfile writes after them could go into a closed pipe and fail
the upload with a spurious 500 ("passing bulk input to subprocess: write |1: broken pipe").
"""

from __future__ import annotations

import io
import tarfile

from labeling.backends import LabelError
from labeling.backends.container import ContainerBackend

BLOCK = 512


def assert_ends_at_the_marker(data: bytes) -> None:
    assert len(data) % BLOCK == 0
    assert data[-2 * BLOCK:] == b"\0" * (2 * BLOCK)
    # The block before the marker is not zero: it holds the last member's data or header.
    assert data[-3 * BLOCK:-2 * BLOCK] != b"\0" * BLOCK


def test_the_credentials_tar_has_no_record_padding_and_reads_back():
    files = {".credentials.json": b'{"token": "x"}', "settings.json": b"{}"}

    data = ContainerBackend._credentials_tar(files)

    assert_ends_at_the_marker(data)
    assert len(data) < tarfile.RECORDSIZE  # Python alone would pad this to a full 10 KiB record
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert {member.name: tar.extractfile(member).read() for member in tar} == files
        assert all(member.uid == 0 and member.mode == 0o444 for member in tar)


def test_the_images_archive_has_no_record_padding_and_holds_every_readable_image(make_image, tmp_path):
    images = [make_image((30, 20), ext="png"), make_image((20, 30), ext="jpg")]
    missing = make_image(ext="png")
    missing.path.unlink()
    archive = tmp_path / "images.tar"
    outcomes = {}

    staged = ContainerBackend._pack([*images, missing], archive, outcomes)

    assert staged == images
    assert isinstance(outcomes[missing.id], LabelError)
    data = archive.read_bytes()
    assert_ends_at_the_marker(data)
    with tarfile.open(archive) as tar:
        assert {member.name: tar.extractfile(member).read() for member in tar} == {
            image.key: image.path.read_bytes() for image in images
        }
