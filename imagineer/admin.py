from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from . import quotas
from .models import ApiToken, MaintenanceRun, UserLimits


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


class UserLimitsForm(forms.ModelForm):
    """Each limit's help text says what the site default is now, so staff see what "empty" means."""

    class Meta:
        model = UserLimits
        fields = ("user", "max_active_training", "max_active_labeling", "max_active_scraping",
                  "max_active_generation", "note")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for spec in quotas.KINDS.values():
            field = self.fields.get(spec.field)
            if field is not None:
                field.help_text = (f"{field.help_text} The site default is {quotas.default_limit(spec.kind)} "
                                   f"({spec.env}).")


def _usage(user) -> str:
    return ", ".join(f"{u.label} {u.active}/{u.limit}" for u in quotas.quota_usage(user))


@admin.register(UserLimits)
class UserLimitsAdmin(admin.ModelAdmin):
    form = UserLimitsForm
    list_display = ("user", "max_active_training", "max_active_labeling", "max_active_scraping",
                    "max_active_generation", "note", "updated_at")
    search_fields = ("user__username", "user__email", "note")
    autocomplete_fields = ("user",)
    readonly_fields = ("active_now", "updated_at")

    @admin.display(description="Active now / limit")
    def active_now(self, obj):
        return _usage(obj.user) if obj and obj.user_id else "—"


class UserLimitsInline(admin.StackedInline):
    model = UserLimits
    form = UserLimitsForm
    fields = ("max_active_training", "max_active_labeling", "max_active_scraping", "max_active_generation", "note")
    can_delete = True
    extra = 1  # an empty form until staff fill it in; an untouched one saves nothing
    max_num = 1
    verbose_name_plural = "Job limits (queued plus running jobs; empty fields use the site defaults)"


# The user page gets the limits inline: that is where staff look when one person needs more (or less).
User = get_user_model()
_UserAdminBase = type(admin.site._registry[User]) if admin.site.is_registered(User) else UserAdmin
if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class ImagineerUserAdmin(_UserAdminBase):
    inlines = [*_UserAdminBase.inlines, UserLimitsInline]
