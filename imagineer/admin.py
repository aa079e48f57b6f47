from django.contrib import admin

from .models import ApiToken, MaintenanceRun


@admin.register(MaintenanceRun)
class MaintenanceRunAdmin(admin.ModelAdmin):
    list_display = ("name", "started_at", "finished_at", "outcome", "counts")
    list_filter = ("name", "outcome")
    search_fields = ("name", "message")
    date_hierarchy = "started_at"
    readonly_fields = ("name", "arguments", "started_at", "finished_at", "outcome", "counts", "message")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "user__username", "user__email", "prefix")
    readonly_fields = ("user", "prefix", "token_hash", "created_at", "last_used_at")
    fields = ("user", "name", "prefix", "token_hash", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def has_add_permission(self, request):
        # Raw tokens are shown once to their owner; staff revoke, users create.
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        from django.utils import timezone

        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} token(s).")
