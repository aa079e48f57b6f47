from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from gallery.models import Album, Image
from imagineer.cli import add_run_mode_arguments, finish, wait_for_job
from imagineer.jobs import QueueUnavailable
from imagineer.quotas import QuotaExceeded
from labeling.backends import BACKEND_NAMES
from labeling.jobs import run_labeling_job
from labeling.services import LabelInputError, labeling_job_start


class Command(BaseCommand):
    help = (
        "Label an album or some images with captions, tags, categories and NSFW verdicts. Images that already "
        "have labels from the backend are skipped unless --force. Without --wait or --inline the job is only "
        "queued. Exit status is non-zero when the job failed."
    )

    def add_arguments(self, parser):
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--album", metavar="NAME", help="Album name.")
        target.add_argument("--image", metavar="ID", type=int, nargs="+", help="Image ids.")
        parser.add_argument("--backend", choices=BACKEND_NAMES, default=None,
                            help="local (offline default), tagger, captioner, claude-docker or anthropic.")
        parser.add_argument("--owner", metavar="USERNAME", help="Whose album/images (needed when ambiguous).")
        parser.add_argument("--force", action="store_true", help="Label again images already labelled.")
        add_run_mode_arguments(parser)

    def handle(self, *args, **options):
        from django.conf import settings

        backend = options["backend"] or settings.LABEL_DEFAULT_BACKEND
        owner = None
        if options["owner"]:
            owner = get_user_model().objects.filter(username=options["owner"]).first()
            if owner is None:
                raise CommandError(f"No user named {options['owner']!r}.")
        album, ids = None, options["image"] or []
        if options["album"]:
            albums = Album.objects.filter(name=options["album"])
            if owner is not None:
                albums = albums.filter(owner=owner)
            found = list(albums[:2])
            if not found:
                raise CommandError(f"No album named {options['album']!r}.")
            if len(found) > 1:
                raise CommandError("Several users have an album with that name; add --owner USERNAME.")
            album = found[0]
            owner = owner or album.owner
        else:
            owners = set(Image.objects.filter(pk__in=ids).values_list("owner_id", flat=True))
            if not owners:
                raise CommandError("None of those image ids exist.")
            if owner is None:
                if len(owners) > 1:
                    raise CommandError("Those images belong to several users; add --owner USERNAME.")
                owner = get_user_model().objects.get(pk=owners.pop())
        try:
            job = labeling_job_start(user=owner, backend=backend, album=album, image_ids=ids,
                                     force=options["force"], enqueue=not options["inline"])
        except (LabelInputError, QuotaExceeded, QueueUnavailable) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Labeling job {job.pk}: {job.counters.get('total', 0)} image(s) with {backend}.")
        if options["inline"]:
            run_labeling_job(job.pk)
        elif options["wait"]:
            wait_for_job(job, show_progress=not options["no_progress"])
        else:
            self.stdout.write("Queued; a worker on the 'label' queue will run it.")
            return
        finish(self, job)
