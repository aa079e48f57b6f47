from pathlib import Path

from django.core.management.base import CommandError

from gallery.models import Album
from imagineer.maintenance import MaintenanceCommand
from labeling.services import LabelInputError, dataset_export


class Command(MaintenanceCommand):
    help = (
        "Write an album as a training dataset: a kohya-style folder (<repeats>_<album>/ with a .txt caption "
        "beside each image) or images plus metadata.jsonl (diffusers imagefolder). Captions: the manual "
        "caption, else an approved machine caption, else the tags, else the album name."
    )

    def add_arguments(self, parser):
        parser.add_argument("out_dir", metavar="OUT_DIR")
        parser.add_argument("--album", metavar="NAME", required=True)
        parser.add_argument("--owner", metavar="USERNAME", help="Needed when several users have that album name.")
        parser.add_argument("--format", choices=["kohya", "jsonl"], default="kohya")
        parser.add_argument("--append-tags", action="store_true", help="Append the tags to each caption.")
        parser.add_argument("--repeats", type=int, default=1, help="kohya folder repeat count (default 1).")

    def run(self, *args, **options):
        albums = Album.objects.filter(name=options["album"])
        if options["owner"]:
            albums = albums.filter(owner__username=options["owner"])
        found = list(albums[:2])
        if not found:
            raise CommandError(f"No album named {options['album']!r}.")
        if len(found) > 1:
            raise CommandError("Several users have an album with that name; add --owner USERNAME.")
        try:
            # What the album's owner may see: other people's images that turned private stay out.
            result = dataset_export(album=found[0], user=found[0].owner, fmt=options["format"],
                                    out_dir=Path(options["out_dir"]), append_tags=options["append_tags"],
                                    repeats=options["repeats"])
        except (LabelInputError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"exported {result['images']} image(s) to {result['folder']}")
        return {"images": result["images"]}
