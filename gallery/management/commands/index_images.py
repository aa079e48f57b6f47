"""Import image files and directory trees into the gallery."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError
from tqdm import tqdm

from gallery.imaging import ImageRejected
from gallery.indexing import init_worker, prepare_file
from gallery.models import Image, ImageSource
from gallery.services import StorageFailed, album_add_images, album_get_or_create, image_ingest
from imagineer.cli import resolve_owner
from imagineer.maintenance import MaintenanceCommand


def iter_files(paths: list[Path], recursive: bool) -> Iterator[Path]:
    for root in paths:
        if root.is_file():
            yield root
            continue
        if recursive:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if not name.startswith("."):
                        yield Path(dirpath) / name
        else:
            for child in sorted(root.iterdir()):
                if child.is_file() and not child.name.startswith("."):
                    yield child


class Command(MaintenanceCommand):
    help = (
        "Import image files and directory trees into the gallery. Idempotent: files already imported for the "
        "owner are counted as duplicates. Prints every rejected file with its reason and ends with "
        "'imported N, duplicates D, rejected R'. Exit status 0 when it ran, 1 when it could not run."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="PATH", help="Files or directories to import.")
        parser.add_argument("--album", metavar="NAME", help="Add the images to this album (created if missing).")
        parser.add_argument("--owner", metavar="USERNAME",
                            help="Owner of the images (default: the only user, else the only superuser).")
        parser.add_argument("--public", action="store_true", help="Make the imported images public.")
        parser.add_argument("--stack", action="store_true",
                            help="Stack each new near duplicate under the image it resembles (one grid tile).")
        parser.add_argument("--recursive", "-r", action="store_true", help="Descend into subdirectories.")
        parser.add_argument("--workers", "-j", type=int, default=1,
                            help="Processes that decode and make thumbnails (default 1; use your core count).")
        parser.add_argument("--no-progress", action="store_true", help="Do not show a progress bar.")

    def _owner(self, username: str | None):
        return resolve_owner(username)

    def run(self, *args, **options):
        owner = self._owner(options["owner"])
        roots = [Path(p).expanduser() for p in options["paths"]]
        missing = [str(p) for p in roots if not p.exists()]
        if missing:
            raise CommandError(f"No such file or directory: {', '.join(missing)}")
        if options["workers"] < 1:
            raise CommandError("--workers must be at least 1.")
        album = album_get_or_create(owner=owner, name=options["album"])[0] if options["album"] else None
        files = [str(p.resolve()) for p in iter_files(roots, options["recursive"])]
        known = frozenset(Image.objects.filter(owner=owner).values_list("sha256", flat=True))
        limits = {
            "max_bytes": settings.GALLERY_MAX_UPLOAD_BYTES, "max_pixels": settings.GALLERY_MAX_IMAGE_PIXELS,
            "max_total_pixels": settings.GALLERY_MAX_TOTAL_FRAME_PIXELS,
            "thumb_size": settings.GALLERY_THUMB_SIZE, "preview_size": settings.GALLERY_PREVIEW_SIZE,
        }
        counts = {"imported": 0, "duplicates": 0, "rejected": 0}
        progress = tqdm(total=len(files), unit="file", disable=options["no_progress"] or not files,
                        file=sys.stderr, dynamic_ncols=True)

        def handle(result) -> None:
            path, status, payload, data = result
            progress.update(1)
            if status == "rejected":
                counts["rejected"] += 1
                with tqdm.external_write_mode(file=sys.stderr):
                    self.stderr.write(f"rejected {path}: {payload}")
                return
            if status == "known":
                counts["duplicates"] += 1
                if album is not None:
                    existing = Image.objects.filter(owner=owner, sha256=payload).first()
                    if existing is not None:
                        album_add_images(album=album, images=[existing])
                return
            try:
                outcome = image_ingest(
                    owner=owner, data=data, filename=path, source=ImageSource.INDEX, is_public=options["public"],
                    album=album, prepared=payload, source_detail={"path": path},
                    stack_near_duplicates=options["stack"],
                )
            except (ImageRejected, StorageFailed) as exc:
                counts["rejected"] += 1
                with tqdm.external_write_mode(file=sys.stderr):
                    self.stderr.write(f"rejected {path}: {exc}")
                return
            counts["imported" if outcome.created else "duplicates"] += 1

        if options["workers"] == 1:
            init_worker(known, limits)
            for path in files:
                handle(prepare_file(path))
        else:
            # Spawned, not forked: no database connection may be shared with a child.
            with ProcessPoolExecutor(max_workers=options["workers"], mp_context=get_context("spawn"),
                                     initializer=init_worker, initargs=(known, limits)) as pool:
                for result in pool.map(prepare_file, files, chunksize=4):
                    handle(result)
        progress.close()
        self.stdout.write(f"imported {counts['imported']}, duplicates {counts['duplicates']}, "
                          f"rejected {counts['rejected']}")
        return counts

