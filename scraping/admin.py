from django.contrib import admin

from imagineer.jobs import job_cancel

from .models import ScrapedItem, ScrapeJob


@admin.register(ScrapeJob)
class ScrapeJobAdmin(admin.ModelAdmin):
    list_display = ("pk", "owner", "host", "album_name", "status", "stage", "pages", "downloaded", "imported",
                    "failed", "duration_text", "created_at")
    list_filter = ("status", "stage", "crawl_reason", "optout_policy")
    search_fields = ("owner__username", "start_url", "album_name", "message", "error")
    raw_id_fields = ("owner", "album", "rerun_of")
    list_select_related = ("owner",)
    readonly_fields = (
        "start_url", "optout_policy", "status", "stage", "progress", "message", "error", "counters",
        "error_buckets", "crawl_reason",
        "limits_hit", "crawl_stats", "log_key", "log_tail", "rq_job_id", "created_at", "started_at", "finished_at",
        "heartbeat_at", "cancel_requested", "cancel_requested_at", "attempts",
    )
    actions = ["cancel"]

    @admin.display(description="Pages")
    def pages(self, obj):
        return obj.count("pages")

    @admin.display(description="Downloaded")
    def downloaded(self, obj):
        return obj.count("downloaded")

    @admin.display(description="Imported")
    def imported(self, obj):
        return obj.count("imported")

    @admin.display(description="Failed")
    def failed(self, obj):
        return obj.count("failed")

    @admin.display(description="Duration")
    def duration_text(self, obj):
        return obj.duration_text

    @admin.action(description="Cancel selected scrapes")
    def cancel(self, request, queryset):
        count = sum(1 for job in queryset if job_cancel(job))
        self.message_user(request, f"{count} scrape(s) cancelled or asked to stop.")


@admin.register(ScrapedItem)
class ScrapedItemAdmin(admin.ModelAdmin):
    list_display = ("pk", "job", "short_url", "outcome", "bucket", "http_status", "image")
    list_filter = ("outcome", "bucket")
    search_fields = ("url", "page_url", "alt", "title", "reason")
    raw_id_fields = ("job", "image")
    list_select_related = ("job",)

    @admin.display(description="URL")
    def short_url(self, obj):
        return obj.url[:100]
