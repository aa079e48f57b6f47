from gallery.models import DerivativeStatus, Image
from gallery.services import image_make_derivatives
from imagineer.maintenance import MaintenanceCommand


class Command(MaintenanceCommand):
    help = "Make the thumbnails and previews that are missing (pending or failed), in this process."

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true", help="Remake every image's thumbnails.")

    def run(self, *args, **options):
        qs = Image.objects.all() if options["all"] else Image.objects.exclude(derivatives=DerivativeStatus.READY)
        made = failed = 0
        for image in qs.iterator():
            image_make_derivatives(image=image)
            image.refresh_from_db(fields=["derivatives"])
            if image.derivatives == DerivativeStatus.READY:
                made += 1
            else:
                failed += 1
        self.stdout.write(f"made {made}, failed {failed}")
        return {"made": made, "failed": failed}
