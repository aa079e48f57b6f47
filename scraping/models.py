"""Scrape jobs and what they found: one `ScrapedItem` per image URL a crawl discovered, with its outcome."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.db import models
from django.urls import reverse

from imagineer.models import Job


class Stage(models.TextChoices):
    QUEUED = "queued", "Queued"
    CRAWLING = "crawling", "Crawling"
    IMPORTING = "importing", "Importing"
    DONE = "done", "Done"


# Counter keys on ScrapeJob.counters, in the order the pages show them.
COUNTER_LABELS = {
    "pages": "pages crawled",
    "pages_failed": "pages failed",
    "discovered": "images discovered",
    "downloaded": "downloaded",
    "imported": "imported",
    "duplicates": "duplicates",
    "too_small": "too small",
    "failed": "failed",
    "skipped": "skipped",
    "opted_out": "opted out",
}
COUNTER_KEYS = tuple(COUNTER_LABELS)


def empty_counters() -> dict[str, int]:
    return dict.fromkeys(COUNTER_KEYS, 0)


class OptOutPolicy(models.TextChoices):
    RESPECT = "respect", "Respect opt-outs (skip the images)"
    IGNORE = "ignore", "Ignore opt-outs (import, record the signal) — staff only"


class ScrapeJob(Job):
    queue_name = "scrape"
    job_function = "scraping.jobs.run_scrape_job"
    quota_kind = "scraping"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="scrape_jobs")
    start_url = models.URLField(max_length=2000)
    album = models.ForeignKey(
        "gallery.Album", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The target album; a new one is created (by name) when the first image arrives.",
    )
    album_name = models.CharField(max_length=200, help_text="The target album's name.")
    max_pages = models.PositiveIntegerField(default=100)
    max_images = models.PositiveIntegerField(default=200)
    depth = models.PositiveIntegerField(default=2, help_text="Links followed from the start page (0: only it).")
    allowed_domains = models.JSONField(default=list, blank=True,
                                       help_text="Domains whose pages are followed; default the start URL's host.")
    min_width = models.PositiveIntegerField(default=0)
    min_height = models.PositiveIntegerField(default=0)
    min_bytes = models.PositiveIntegerField(default=0)
    obey_robots = models.BooleanField(default=True, help_text="Honour robots.txt.")
    optout_policy = models.CharField(
        max_length=10, choices=OptOutPolicy.choices, default=OptOutPolicy.RESPECT,
        help_text="AI opt-outs (X-Robots-Tag noai/noimageai/noindex/noimageindex, meta robots, TDMRep): "
                  "respect skips those images; ignore (staff only) imports them with the signal recorded.",
    )
    delay = models.FloatField(default=1.0, help_text="Seconds between requests to the site.")
    autothrottle = models.BooleanField(default=True, help_text="Adapt the delay to the site's response times.")
    concurrency = models.PositiveIntegerField(default=8)
    download_timeout = models.FloatField(default=30.0, help_text="Seconds per request.")
    stage = models.CharField(max_length=10, choices=Stage.choices, default=Stage.QUEUED)
    error_buckets = models.JSONField(default=dict, blank=True,
                                     help_text="Failures by kind (HTTP status or exception), pages and images.")
    crawl_reason = models.CharField(max_length=40, blank=True, help_text="How the crawl ended.")
    limits_hit = models.JSONField(default=list, blank=True)
    crawl_stats = models.JSONField(default=dict, blank=True, help_text="The crawler's own figures.")
    log_key = models.CharField(max_length=300, blank=True,
                               help_text="The crawl log's key in the artifacts storage, once uploaded.")
    log_tail = models.TextField(blank=True, help_text="The crawl log's last lines.")
    rerun_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns")

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["owner", "-created_at"], name="scraping_job_owner_created")]

    def __str__(self) -> str:
        return f"Scrape {self.pk} of {self.host}"

    def get_absolute_url(self) -> str:
        return reverse("scraping:job_detail", args=[self.pk])

    @property
    def host(self) -> str:
        return urlsplit(self.start_url).hostname or self.start_url

    def count(self, key: str) -> int:
        return int((self.counters or {}).get(key, 0) or 0)

    def summary(self) -> str:
        """One line of counters, for the job's message and the command's last line."""
        c = self.count
        return (f"{c('pages')} page(s) crawled, {c('pages_failed')} failed; {c('discovered')} image(s) found: "
                f"{c('downloaded')} downloaded, {c('imported')} imported, {c('duplicates')} duplicate(s), "
                f"{c('too_small')} too small, {c('failed')} failed, {c('skipped')} skipped, "
                f"{c('opted_out')} opted out")

    @property
    def counter_rows(self) -> list[tuple[str, str, int]]:
        return [(key, label, self.count(key)) for key, label in COUNTER_LABELS.items()]

    def _rate(self, key: str) -> float | None:
        duration = self.duration
        if not duration or duration <= timedelta(0):
            return None
        return self.count(key) / duration.total_seconds()

    @property
    def pages_per_second(self) -> float | None:
        return self._rate("pages")

    @property
    def images_per_second(self) -> float | None:
        return self._rate("downloaded")

    @property
    def duration_text(self) -> str:
        duration = self.duration
        if duration is None:
            return "—"
        seconds = duration.total_seconds()
        if seconds < 60:
            return f"{seconds:.1f}s"
        minutes, secs = divmod(int(seconds), 60)
        hours, minutes = divmod(minutes, 60)
        return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"

    @property
    def sorted_error_buckets(self) -> list[tuple[str, int]]:
        return sorted((self.error_buckets or {}).items(), key=lambda kv: (-kv[1], kv[0]))

    @property
    def was_refused(self) -> bool:
        return self.crawl_reason == "refused"


class Outcome(models.TextChoices):
    PENDING = "pending", "Pending"
    DOWNLOADED = "downloaded", "Downloaded, not imported yet"
    IMPORTED = "imported", "Imported"
    DUPLICATE = "duplicate", "Duplicate"
    TOO_SMALL = "too_small", "Too small"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    OPTED_OUT = "opted_out", "Opted out"


class ScrapedItem(models.Model):
    """One image URL a crawl discovered, what became of it, and the gallery image it became (or duplicates)."""

    job = models.ForeignKey(ScrapeJob, on_delete=models.CASCADE, related_name="items")
    url = models.TextField(help_text="The image URL as found on the page.")
    final_url = models.TextField(blank=True, help_text="Where it was fetched from, after redirects.")
    page_url = models.TextField(blank=True)
    alt = models.TextField(blank=True)
    title = models.TextField(blank=True)
    found_in = models.CharField(max_length=10, blank=True, help_text="img, srcset or link.")
    outcome = models.CharField(max_length=12, choices=Outcome.choices, default=Outcome.PENDING, db_index=True)
    reason = models.TextField(blank=True, help_text="Why it failed or was skipped.")
    bucket = models.CharField(max_length=40, blank=True, help_text="Failure kind: http_404, timeout, robots…")
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    image = models.ForeignKey("gallery.Image", null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="scraped_items",
                              help_text="The image it became, or the existing image it duplicates.")
    sha256 = models.CharField(max_length=64, blank=True)
    bytes = models.PositiveBigIntegerField(null=True, blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    format = models.CharField(max_length=10, blank=True)
    content_type = models.CharField(max_length=100, blank=True)
    seq = models.PositiveIntegerField(default=0, help_text="Order of discovery within the job.")
    optout = models.JSONField(default=list, blank=True,
                              help_text="AI opt-out signals found: [{signal, value, where (page or image), url}].")
    licence_hints = models.JSONField(default=list, blank=True,
                                     help_text="Licence hints of the page: [{kind, value, page_url}].")
    fetched_at = models.DateTimeField(null=True, blank=True, help_text="When the image was downloaded.")

    class Meta:
        ordering = ["job", "seq"]
        indexes = [models.Index(fields=["job", "outcome", "seq"], name="scraping_item_job_outcome")]

    def __str__(self) -> str:
        return f"{self.url[:80]} ({self.outcome})"

    @property
    def outcome_text(self) -> str:
        if self.outcome == Outcome.DUPLICATE and self.image_id:
            return f"duplicate of image {self.image_id}"
        if self.outcome in (Outcome.FAILED, Outcome.SKIPPED, Outcome.TOO_SMALL, Outcome.OPTED_OUT) and self.reason:
            return f"{self.get_outcome_display().lower()}: {self.reason}"
        return self.get_outcome_display().lower()
