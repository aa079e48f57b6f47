"""Admin for generation jobs, with their LoRAs and output images inline."""

from django.contrib import admin

from ..models import GenerationJob, GenerationLora, GenerationOutput


class GenerationLoraInline(admin.TabularInline):
    model = GenerationLora
    extra = 0
    raw_id_fields = ("lora",)


class GenerationOutputInline(admin.TabularInline):
    model = GenerationOutput
    extra = 0
    raw_id_fields = ("image",)
    readonly_fields = ("index", "seed")


@admin.register(GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "short_prompt", "mode", "base_model", "status", "progress", "seed", "created_at")
    list_filter = ("status", "mode", "base_model", "scheduler")
    search_fields = ("prompt", "owner__username")
    raw_id_fields = ("owner", "source_image")
    readonly_fields = ("rq_job_id", "created_at", "started_at", "finished_at", "heartbeat_at", "attempts", "timings",
                       "counters", "step", "total_steps", "preview_step")
    exclude = ("mask_png", "preview_png")  # binary PNGs: the job page and the preview URL show them
    inlines = [GenerationLoraInline, GenerationOutputInline]
    date_hierarchy = "created_at"

    @admin.display(description="Prompt")
    def short_prompt(self, obj: GenerationJob) -> str:
        return obj.prompt[:60]
