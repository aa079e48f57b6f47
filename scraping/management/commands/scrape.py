from django.core.management.base import BaseCommand, CommandError

from gallery.models import Album
from imagineer.cli import add_run_mode_arguments, finish, resolve_owner, wait_for_job
from imagineer.jobs import QueueUnavailable
from imagineer.models import JobStatus
from imagineer.quotas import QuotaExceeded
from scraping.jobs import run_scrape_job
from scraping.services import DEFAULTS, ScrapeInputError, scrape_job_start


class Command(BaseCommand):
    help = (
        "Crawl a website and bring its images into an album (by default named after the site). Only public "
        "http(s) addresses are crawled. Without --wait or --inline the job is only queued for a worker on the "
        "'scrape' queue. Ends with a line of counters; the exit status is non-zero when the scrape was "
        "refused, failed or was cancelled."
    )

    def add_arguments(self, parser):
        parser.add_argument("url", metavar="URL", help="Where the crawl starts.")
        parser.add_argument("--album", metavar="NAME", help="Target album: one of the owner's, or a new one.")
        parser.add_argument("--owner", metavar="USERNAME",
                            help="Whose images they become (default: the only user, or the only superuser).")
        parser.add_argument("--max-pages", type=int, metavar="N",
                            help=f"Pages at most (default {DEFAULTS['max_pages']}).")
        parser.add_argument("--max-images", type=int, metavar="N",
                            help=f"Images at most (default {DEFAULTS['max_images']}).")
        parser.add_argument("--depth", type=int, metavar="N",
                            help=f"Link depth from the start page (default {DEFAULTS['depth']}).")
        parser.add_argument("--ignore-optouts", action="store_true",
                            help="Import images whose publisher opted out of AI use (X-Robots-Tag noai, TDMRep...), "
                                 "recording the signal; the owner must be staff. Default: skip them.")
        add_run_mode_arguments(parser)

    def _owner(self, username: str | None):
        return resolve_owner(username)

    def handle(self, *args, **options):
        owner = self._owner(options["owner"])
        album = None
        if options["album"]:
            album = Album.objects.filter(owner=owner, name=options["album"].strip()).first()
        limits = {key: options[key] for key in ("max_pages", "max_images", "depth") if options[key] is not None}
        if options["ignore_optouts"]:
            limits["optout_policy"] = "ignore"
        try:
            job = scrape_job_start(user=owner, start_url=options["url"], album=album,
                                   album_name=options["album"] or "", enqueue=not options["inline"], **limits)
        except (ScrapeInputError, QuotaExceeded, QueueUnavailable) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Scrape job {job.pk}: {job.start_url} into album “{job.album_name}” for {owner}.")
        if options["inline"]:
            run_scrape_job(job.pk)
        elif options["wait"]:
            wait_for_job(job, show_progress=not options["no_progress"])
        else:
            self.stdout.write("Queued; a worker on the 'scrape' queue will run it.")
            return
        job.refresh_from_db()
        if job.status != JobStatus.SUCCEEDED:  # a successful job's message is this line already
            self.stdout.write(job.summary())
        finish(self, job)
