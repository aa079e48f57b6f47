"""Find (and with --fix repair) media files without rows and rows without files."""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.db.models import Q
from django.utils import timezone

from gallery.models import DerivativeStatus, Image
from gallery.services import image_make_derivatives
from imagineer.maintenance import MaintenanceCommand

PREFIXES = ("originals", "thumbs", "previews")


def walk(prefix: str):
    """Every file name under `prefix` in the media storage (local disk or S3 alike)."""
    try:
        dirs, files = default_storage.listdir(prefix)
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in files:
        yield f"{prefix}/{name}"
    for sub in dirs:
        yield from walk(f"{prefix}/{sub}")


class Command(MaintenanceCommand):
    help = (
        "Compare the media storage with the database: files no image row uses (left by a crash or a full "
        "disk) and image rows whose files are missing. With --fix: delete the orphan files, remake missing "
        "thumbnails, and move images whose original is gone to the trash (restorable; purge_trash deletes)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--fix", action="store_true", help="Repair what can be repaired.")

    def run(self, *args, **options):
        fix = options["fix"]
        referenced: set[str] = set()
        for file, thumb, preview in Image.objects.values_list("file", "thumbnail", "preview").iterator():
            referenced.update(n for n in (file, thumb, preview) if n)
        orphans = [name for prefix in PREFIXES for name in walk(prefix) if name not in referenced]
        missing_originals, missing_derivatives = [], []
        for image in Image.objects.only("pk", "file", "thumbnail", "preview", "derivatives").iterator():
            if not default_storage.exists(image.file.name):
                missing_originals.append(image)
            elif image.derivatives == DerivativeStatus.READY and not all(
                default_storage.exists(n) for n in (image.thumbnail.name, image.preview.name)
            ):
                missing_derivatives.append(image)
        for name in orphans:
            self.stdout.write(f"orphan file: {name}")
        for image in missing_originals:
            self.stdout.write(f"image {image.pk}: original missing ({image.file.name})")
        for image in missing_derivatives:
            self.stdout.write(f"image {image.pk}: thumbnail or preview missing")
        counts = {"orphan_files": len(orphans), "missing_originals": len(missing_originals),
                  "missing_derivatives": len(missing_derivatives), "fixed": 0}
        if fix:
            for name in orphans:
                default_storage.delete(name)
                counts["fixed"] += 1
            for image in missing_derivatives:
                image_make_derivatives(image=image)
                counts["fixed"] += 1
            if missing_originals:
                counts["fixed"] += Image.objects.filter(
                    Q(pk__in=[i.pk for i in missing_originals]) & Q(trashed_at__isnull=True)
                ).update(trashed_at=timezone.now(), derivatives=DerivativeStatus.FAILED)
        self.stdout.write(
            "orphan files {orphan_files}, missing originals {missing_originals}, missing thumbnails "
            "{missing_derivatives}{fixed}".format(
                **{**counts, "fixed": f", fixed {counts['fixed']}" if fix else ""})
        )
        return counts
