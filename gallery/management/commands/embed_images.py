from django.core.management.base import CommandError

from gallery.semantic import services, store
from imagineer.maintenance import MaintenanceCommand


class Command(MaintenanceCommand):
    help = (
        "Compute the CLIP vectors semantic search needs for images that have none from the configured model "
        "(IMAGINEER_CLIP_MODEL; new images are embedded on the default queue as they arrive). With --build-tiny "
        "PATH: write a tiny random-weight CLIP there first (for trying the feature without a real model). On "
        "PostgreSQL with pgvector it also fills pgvector's column for vectors stored without it."
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
        # On PostgreSQL with pgvector: vectors stored without their pgvec copy (written some other way) are
        # ranked in Python until filled here.
        filled = store.fill_missing_pgvec()
        if filled:
            self.stdout.write(f"copied {filled} stored vector(s) into pgvector's column")
        return {"embedded": count, "pgvec_filled": filled}
