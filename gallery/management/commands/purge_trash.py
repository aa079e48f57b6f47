from django.conf import settings

from gallery.services import trash_purge
from imagineer.maintenance import MaintenanceCommand


class Command(MaintenanceCommand):
    help = (
        "Delete images that have been in the trash longer than IMAGINEER_TRASH_DAYS (default 30) for good: "
        "their rows and their files (originals and thumbnails no other image uses)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=None,
                            help=f"Purge what was trashed at least this many days ago "
                                 f"(default {settings.GALLERY_TRASH_DAYS}; 0 empties the whole trash).")

    def run(self, *args, **options):
        counts = trash_purge(older_than_days=options["days"])
        self.stdout.write(f"purged {counts['images']} image(s), deleted {counts['files']} file(s)")
        return counts
