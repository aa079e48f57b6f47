from django.contrib import admin
from django.utils.html import format_html

from . import services
from .models import Album, AlbumImage, AlbumMember, AlbumShareLink, GalleryPreference, Image, ImageProvenance


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("thumb", "__str__", "owner", "source", "format", "dimensions", "is_public", "is_nsfw",
                    "created_at", "trashed_at")
    list_display_links = ("thumb", "__str__")
    list_filter = ("source", "is_public", "is_nsfw", "format", "derivatives",
                   ("trashed_at", admin.EmptyFieldListFilter))
    search_fields = ("title", "description", "original_filename", "sha256", "owner__username", "source_url")
    list_select_related = ("owner",)
    readonly_fields = ("thumb_large", "file", "sha256", "phash", "width", "height", "format", "mime", "bytes",
                       "source", "source_url", "source_page_url", "source_detail", "thumbnail", "preview",
                       "derivatives", "created_at", "updated_at")
    fields = ("thumb_large", "owner", "title", "description", "is_public", "is_nsfw", "trashed_at",
              *readonly_fields[1:])
    raw_id_fields = ("owner",)
    date_hierarchy = "created_at"
    actions = ["make_public", "make_private", "mark_nsfw", "mark_sfw", "trash", "restore"]
    list_per_page = 50

    @admin.display(description="")
    def thumb(self, obj):
        if obj.derivatives != "ready":
            return "…"
        return format_html('<img src="{}" alt="" width="60">', obj.thumbnail_url())

    @admin.display(description="Preview")
    def thumb_large(self, obj):
        if not obj.pk or obj.derivatives != "ready":
            return "not ready"
        return format_html('<img src="{}" alt="" width="400">', obj.preview_url())

    @admin.display(description="Size")
    def dimensions(self, obj):
        return f"{obj.width}×{obj.height}"

    def _bulk(self, request, queryset, func, verb, **kwargs):
        count = func(user=request.user, ids=list(queryset.values_list("pk", flat=True)), **kwargs)
        self.message_user(request, f"{count} image(s) {verb}.")

    @admin.action(description="Make public")
    def make_public(self, request, queryset):
        self._bulk(request, queryset, services.images_set_public, "made public", public=True)

    @admin.action(description="Make private")
    def make_private(self, request, queryset):
        self._bulk(request, queryset, services.images_set_public, "made private", public=False)

    @admin.action(description="Mark NSFW")
    def mark_nsfw(self, request, queryset):
        self._bulk(request, queryset, services.images_set_nsfw, "marked NSFW", nsfw=True)

    @admin.action(description="Mark not NSFW")
    def mark_sfw(self, request, queryset):
        self._bulk(request, queryset, services.images_set_nsfw, "marked not NSFW", nsfw=False)

    @admin.action(description="Move to trash")
    def trash(self, request, queryset):
        self._bulk(request, queryset, services.images_trash, "moved to the trash")

    @admin.action(description="Restore from trash")
    def restore(self, request, queryset):
        self._bulk(request, queryset, services.images_restore, "restored")

    def delete_queryset(self, request, queryset):
        # Deleting from the admin goes through the trash, like everywhere else.
        self._bulk(request, queryset, services.images_trash, "moved to the trash (purge_trash deletes for good)")

    def delete_model(self, request, obj):
        services.images_trash(user=request.user, ids=[obj.pk])


class AlbumImageInline(admin.TabularInline):
    model = AlbumImage
    raw_id_fields = ("image",)
    extra = 0
    ordering = ("position",)


class AlbumMemberInline(admin.TabularInline):
    model = AlbumMember
    extra = 0
    raw_id_fields = ("user",)
    verbose_name_plural = "Members (viewer sees; contributor also adds images; editor also removes and captions)"


class AlbumShareLinkInline(admin.TabularInline):
    model = AlbumShareLink
    extra = 0
    fields = ("token", "created_at", "expires_at", "revoked_at")
    readonly_fields = ("token", "created_at")
    verbose_name_plural = "Share links (read-only, no NSFW; set 'revoked at' to stop one)"

    def has_add_permission(self, request, obj=None):
        return False  # made on the album page, where the token is generated


@admin.register(Album)
class AlbumAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "image_count", "is_public", "is_training_source", "updated_at")
    list_filter = ("is_public", "is_training_source")
    search_fields = ("name", "description", "owner__username")
    raw_id_fields = ("owner", "cover")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [AlbumImageInline, AlbumMemberInline, AlbumShareLinkInline]
    actions = ["make_public", "make_private"]

    def get_queryset(self, request):
        return super().get_queryset(request).with_counts(request.user).select_related("owner")

    @admin.display(description="Images", ordering="image_count")
    def image_count(self, obj):
        return obj.image_count

    @admin.action(description="Make public")
    def make_public(self, request, queryset):
        self.message_user(request, f"{queryset.update(is_public=True)} album(s) made public.")

    @admin.action(description="Make private")
    def make_private(self, request, queryset):
        self.message_user(request, f"{queryset.update(is_public=False)} album(s) made private.")


@admin.register(GalleryPreference)
class GalleryPreferenceAdmin(admin.ModelAdmin):
    list_display = ("user", "nsfw_mode")
    raw_id_fields = ("user",)


@admin.register(ImageProvenance)
class ImageProvenanceAdmin(admin.ModelAdmin):
    list_display = ("image", "optout_status", "licence", "artist", "fetched_at")
    list_filter = ("optout_status",)
    search_fields = ("licence", "copyright", "artist", "image__source_url", "image__source_page_url")
    raw_id_fields = ("image",)
    readonly_fields = ("fetched_at", "optout_status", "optout_signals", "licence_hints", "created_at")
