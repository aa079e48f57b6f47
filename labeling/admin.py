from django.contrib import admin
from django.utils import timezone

from imagineer.jobs import job_cancel

from .models import CaptionRevision, Label, LabelerSettings, LabelingJob, ReviewState


@admin.register(Label)
class LabelAdmin(admin.ModelAdmin):
    list_display = ("image", "kind", "value_short", "source", "confidence", "model", "review_state", "created_at")
    list_filter = ("kind", "source", "review_state")
    search_fields = ("value", "model", "image__title")
    raw_id_fields = ("image", "created_by", "job", "reviewed_by")
    list_select_related = ("image",)
    actions = ["approve", "reject"]

    @admin.display(description="Value")
    def value_short(self, obj):
        return obj.value[:80]

    def _review(self, request, queryset, state):
        count = queryset.update(review_state=state, reviewed_by=request.user, reviewed_at=timezone.now())
        self.message_user(request, f"{count} label(s) marked {state}.")

    @admin.action(description="Approve selected labels")
    def approve(self, request, queryset):
        self._review(request, queryset, ReviewState.APPROVED)

    @admin.action(description="Reject selected labels")
    def reject(self, request, queryset):
        self._review(request, queryset, ReviewState.REJECTED)


@admin.register(LabelingJob)
class LabelingJobAdmin(admin.ModelAdmin):
    list_display = ("pk", "owner", "backend", "album", "status", "progress", "message", "created_at", "finished_at")
    list_filter = ("status", "backend")
    search_fields = ("owner__username", "message", "error")
    raw_id_fields = ("owner", "album")
    readonly_fields = ("status", "progress", "message", "error", "counters", "image_errors", "rq_job_id",
                       "created_at", "started_at", "finished_at", "heartbeat_at", "attempts")
    actions = ["cancel"]

    @admin.action(description="Cancel selected jobs")
    def cancel(self, request, queryset):
        count = sum(1 for job in queryset if job_cancel(job))
        self.message_user(request, f"{count} job(s) cancelled or asked to stop.")


@admin.register(LabelerSettings)
class LabelerSettingsAdmin(admin.ModelAdmin):
    """Model folders and options of the offline tagger and captioner (one row)."""

    def has_add_permission(self, request):
        return not LabelerSettings.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        obj.pk = 1
        super().save_model(request, obj, form, change)


@admin.register(CaptionRevision)
class CaptionRevisionAdmin(admin.ModelAdmin):
    list_display = ("image", "tool", "old_text", "new_text", "user", "created_at")
    list_filter = ("tool",)
    raw_id_fields = ("image", "label", "user")
    readonly_fields = ("image", "label", "old_text", "new_text", "tool", "user", "created_at")
