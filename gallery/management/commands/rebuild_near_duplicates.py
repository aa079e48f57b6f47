from django.conf import settings
from django.db import transaction

from gallery.neardup import rebuild_pairs
from imagineer.maintenance import MaintenanceCommand


class Command(MaintenanceCommand):
    help = (
        "Recompute the stored near-duplicate pairs that the duplicates page reads (one indexed lookup per "
        "image). New images record their pairs on arrival; run this after changing "
        "IMAGINEER_NEAR_DUPLICATE_DISTANCE."
    )

    def add_arguments(self, parser):
        parser.add_argument("--owner", type=int, default=None, help="Only this user id's images.")

    def run(self, *args, **options):
        with transaction.atomic():
            pairs = rebuild_pairs(max_distance=settings.GALLERY_NEAR_DUPLICATE_DISTANCE, owner_id=options["owner"])
        self.stdout.write(f"stored {pairs} near-duplicate pair(s)")
        return {"pairs": pairs}
