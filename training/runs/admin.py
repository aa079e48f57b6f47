"""Admin for base models, training runs and LoRAs."""

from django import forms
from django.contrib import admin, messages

from imagineer.jobs import job_cancel

from ..basemodels import (
    BaseModelInvalid,
    base_model_set_default,
    check_base_model_source,
    detect_native_resolution,
    in_models_dir,
)
from ..models import BaseModel, EvaluationGrid, LoraModel, TrainingRun


class BaseModelForm(forms.ModelForm):
    class Meta:
        model = BaseModel
        fields = ["name", "kind", "source", "source_type", "native_resolution", "description", "is_default"]
        help_texts = {"native_resolution": "Pixels the model was trained at; empty: read from a diffusers folder's "
                                           "config, else 512 for SD1.5 and 1024 for SDXL. The training form's "
                                           "default resolution."}

    def clean(self):
        data = super().clean()
        if {"source", "kind", "source_type"} <= data.keys():
            try:
                # Checked from the web machine, which may hold no models: what it cannot check is said, not refused.
                self.notes = check_base_model_source(source=data["source"], kind=data["kind"],
                                                     source_type=data["source_type"])
            except BaseModelInvalid as exc:
                raise forms.ValidationError({"source": str(exc)}) from exc
            if not data.get("native_resolution") and data["source_type"] == "folder":
                data["native_resolution"] = detect_native_resolution(str(in_models_dir(data["source"])), "folder")
        size = data.get("native_resolution")
        if size is not None and not (16 <= size <= 2048 and size % 8 == 0):
            raise forms.ValidationError({"native_resolution": "A multiple of 8 from 16 to 2048."})
        # Only one default may exist; the admin moves it here after saving (see save_model) instead of
        # refusing the form on the one-default constraint.
        self.wants_default = bool(data.get("is_default"))
        data["is_default"] = False
        return data


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    form = BaseModelForm
    list_display = ("name", "kind", "native_size", "source_type", "source", "is_default", "created_at")
    list_filter = ("kind", "source_type", "is_default")
    search_fields = ("name", "source", "description")
    actions = ["make_default"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        for note in getattr(form, "notes", []):
            self.message_user(request, note, level=messages.WARNING)
        if getattr(form, "wants_default", False):
            base_model_set_default(model=obj)

    @admin.action(description="Make the selected model the default")
    def make_default(self, request, queryset):
        model = queryset.first()
        if model is not None:
            base_model_set_default(model=model)
            self.message_user(request, f"{model.name} is now the default base model.")


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "status", "stage", "step", "total_steps", "base_model", "created_at")
    list_filter = ("status", "stage", "base_model")
    search_fields = ("name", "owner__username")
    # A run's settings and dataset must not change under its checkpoints: only the name is editable here.
    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields if f.name not in ("id", "name")] + ["albums"]

    actions = ["cancel"]

    def has_add_permission(self, request):
        return False  # a run needs a frozen dataset and a queued job: start it from the training page

    @admin.action(description="Cancel the selected runs")
    def cancel(self, request, queryset):
        count = sum(1 for run in queryset if job_cancel(run))
        self.message_user(request, f"Asked {count} run(s) to cancel.")


@admin.register(LoraModel)
class LoraModelAdmin(admin.ModelAdmin):
    list_display = ("name", "friendly_name", "owner", "base_model", "default_weight", "is_public", "created_at")
    list_filter = ("is_public", "base_model")
    search_fields = ("name", "friendly_name", "owner__username", "trigger_words")
    raw_id_fields = ("owner", "training_run", "checkpoint_of")
    # The files are what the run's job wrote; an editable path would let the download serve any file on the
    # server (the views only serve files inside the run's folder, but the admin must not offer the choice).
    readonly_fields = ("diffusers_file", "kohya_file")

    def has_add_permission(self, request):
        return False  # a LoRA comes from a finished training run, which registers its files


@admin.register(EvaluationGrid)
class EvaluationGridAdmin(admin.ModelAdmin):
    list_display = ("title", "owner", "run", "base_model", "status", "created_at")
    list_filter = ("status",)
    raw_id_fields = ("owner", "run")
    readonly_fields = ("columns", "prompts", "cells", "grid_file", "status", "progress", "message", "error")
