from django.core.management.base import CommandError

from gallery.semantic import services
from imagineer.maintenance import MaintenanceCommand


class Command(MaintenanceCommand):
    help = (
        "Compute the CLIP vectors semantic search needs for images that have none from the configured model "
        "(IMAGINEER_CLIP_MODEL; new images are embedded on the default queue as they arrive). With --build-tiny "
        "PATH: write a tiny random-weight CLIP there first (for trying the feature without a real model)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--limit", type=int, default=None, help="At most this many images.")
        parser.add_argument("--build-tiny", metavar="PATH", help="Write a tiny CLIP model to PATH and stop.")

    def run(self, *args, **options):
        if options["build_tiny"]:
            from gallery.semantic.clip import build_tiny

            path = build_tiny(options["build_tiny"])
            self.stdout.write(f"tiny CLIP written to {path}; set IMAGINEER_CLIP_MODEL={path}")
            return {"built": str(path)}
        if not services.enabled():
            raise CommandError("No CLIP model is configured: set IMAGINEER_CLIP_MODEL to a model folder.")
        ids = services.missing_ids(options["limit"])
        count = services.embed(ids)
        self.stdout.write(f"embedded {count} image(s)")
        return {"embedded": count}
