"""The container tests' labeler image: Debian's static busybox plus a stand-in `claude` script.

Built from a tar of a folder (no registry, no network) and imported through the Docker API,
so it works on any engine DOCKER_HOST points at. It uses the real image's entrypoint
(labeling/container/entrypoint.sh), so the credentials hand-over is tested too.
"""

from __future__ import annotations

import io
import struct
import tarfile
import time
from pathlib import Path

TEST_IMAGE = "localhost/imagineer-test-labeler:latest"
BUSYBOX = Path("/bin/busybox")
STAND_IN = Path(__file__).with_name("fake_claude.sh")
ENTRYPOINT = Path(__file__).resolve().parent.parent / "container" / "entrypoint.sh"
# Applets the stand-in script and the entrypoint call.
APPLETS = (
    "sh", "basename", "cat", "chmod", "cp", "cut", "echo", "env", "grep", "id", "ls", "mkdir", "printf",
    "sleep", "test", "[", "touch", "tr", "true", "false",
)
IMAGE_CHANGES = [
    'ENTRYPOINT ["/usr/local/bin/labeler-entrypoint"]',
    "ENV PATH=/usr/local/bin:/bin",
    "ENV HOME=/home/claude",
    "LABEL imagineer.claude-code.version=stand-in",
    "USER 1000:1000",
    "WORKDIR /images",
]


def is_static_elf(path: Path) -> bool:
    """True for an ELF executable without a program interpreter (statically linked)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(64)
            if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit only; that is all Debian ships here
                return False
            endian = "<" if header[5] == 1 else ">"
            phoff, = struct.unpack_from(endian + "Q", header, 32)
            phentsize, phnum = struct.unpack_from(endian + "HH", header, 54)
            for index in range(phnum):
                handle.seek(phoff + index * phentsize)
                p_type, = struct.unpack(endian + "I", handle.read(4))
                if p_type == 3:  # PT_INTERP: needs a dynamic loader the image does not have
                    return False
            return True
    except OSError:
        return False


def busybox_problem() -> str | None:
    if not BUSYBOX.exists():
        return f"{BUSYBOX} is missing (Debian package busybox-static)"
    if not is_static_elf(BUSYBOX):
        return f"{BUSYBOX} is not statically linked (install Debian's busybox-static, not busybox)"
    return None


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info)


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    info.mode = 0o777
    tar.addfile(info)


def rootfs_tar() -> bytes:
    """The image's root filesystem as an uncompressed tar (all files owned by root)."""
    problem = busybox_problem()
    if problem:
        raise RuntimeError(problem)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for directory in ("bin", "usr", "usr/local", "usr/local/bin", "images", "claude-credentials", "home",
                          "proc", "sys", "dev", "etc"):
            _add_dir(tar, directory)
        _add_dir(tar, "tmp", 0o1777)
        _add_file(tar, "bin/busybox", BUSYBOX.read_bytes())
        for applet in APPLETS:
            _add_symlink(tar, f"bin/{applet}", "busybox")
        _add_file(tar, "usr/local/bin/claude", STAND_IN.read_bytes())
        _add_file(tar, "usr/local/bin/labeler-entrypoint", ENTRYPOINT.read_bytes())
        _add_file(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nclaude:x:1000:1000::/home/claude:/bin/sh\n",
                  0o644)
        _add_file(tar, "etc/group", b"root:x:0:\nclaude:x:1000:\n", 0o644)
    return buffer.getvalue()


def import_test_image(client, tag: str = TEST_IMAGE):
    """Import the stand-in labeler image into the engine behind `client` (a docker.DockerClient)."""
    repository, _, version = tag.rpartition(":")
    client.api.import_image_from_data(rootfs_tar(), repository=repository, tag=version, changes=IMAGE_CHANGES)
    return client.images.get(tag)
