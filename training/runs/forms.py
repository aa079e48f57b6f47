from __future__ import annotations

from django import forms

from ..models import BaseModel
from .params import (
    MAX_EPOCHS,
    MAX_SAMPLE_PROMPT,
    OPTION_NAMES,
    PARAMS,
    PRESET_LABELS,
    PRESETS,
    RunInputError,
    family_default,
)

# A model this small (the tiny test model, 64 px) is for trying the whole loop out, not for learning a
# style, so it starts from the quick preset: 300 steps at 64 px plus three samples measured about 95 s of
# one CPU core (0.24 s a step, 3 s a sample, 12 s to load and save), about a minute with a few cores.
DEMO_MODEL_MAX_SIZE = 128


def suggested_preset_for(native_size: int | None) -> str:
    return "quick" if native_size is not None and native_size <= DEMO_MODEL_MAX_SIZE else "standard"


MIXED_CHOICES = [("no", "No (fp32)"), ("fp16", "fp16 (CUDA)"), ("bf16", "bf16 (CUDA)")]


def _field(name: str) -> forms.Field:
    param = PARAMS[name]
    common = {"label": param.label, "help_text": param.help, "required": False}
    if param.kind is bool:
        return forms.BooleanField(initial=param.default, **common)
    if name == "mixed_precision":
        return forms.ChoiceField(choices=MIXED_CHOICES, initial=param.default, **common)
    if param.choices:
        return forms.ChoiceField(choices=param.choices, initial=param.default, **common)
    if param.kind is str:
        return forms.CharField(max_length=MAX_SAMPLE_PROMPT, initial=param.default, **common)
    bounds = {}
    if param.minimum is not None and not param.exclusive_minimum:
        bounds["min_value"] = param.minimum
    if param.maximum is not None:
        bounds["max_value"] = param.maximum
    if param.kind is int:
        return forms.IntegerField(initial=param.default, **bounds, **common)
    attrs = {"step": "any"}
    return forms.FloatField(initial=param.default, widget=forms.NumberInput(attrs=attrs), **bounds, **common)


class RunForm(forms.Form):
    """The create page. Types and bounds here; the service checks everything again (API and command too)."""

    name = forms.CharField(max_length=100, required=False, help_text="Empty: the album names and the date.")
    albums = forms.TypedMultipleChoiceField(coerce=int, widget=forms.CheckboxSelectMultiple,
                                            error_messages={"required": "Choose at least one album."})
    base_model = forms.ModelChoiceField(queryset=BaseModel.objects.none(), to_field_name="name", required=False,
                                        empty_label=None)
    preset = forms.ChoiceField(choices=[("", "Custom"), *PRESET_LABELS.items()], required=False, initial="standard")
    epochs = forms.IntegerField(min_value=1, max_value=MAX_EPOCHS, required=False,
                                help_text="Instead of steps: passes over the dataset.")

    advanced = ("steps", "batch_size", "learning_rate", "rank", "alpha", "resolution", "seed", "mixed_precision",
                "gradient_checkpointing", "caption_dropout", "center_crop", "random_flip", "checkpoint_every",
                "sample_every", "sample_prompt", *OPTION_NAMES)

    def __init__(self, *args, albums=(), base_models=None, user=None, sample_prompts=None, **kwargs):
        """`sample_prompts` ({album id: prompt}) prefills the sample prompt for the album chosen up front."""
        super().__init__(*args, **kwargs)
        for name in self.advanced:
            self.fields[name] = _field(name)
        self.fields["resolution"].help_text += " Empty: the base model's native size."
        self.fields["resolution"].initial = None
        self.fields["sample_prompt"].help_text = ("Empty: the caption of the dataset's first image. Several prompts: "
                                                  "separate them with |.")
        self.album_rows = list(albums)
        self.fields["albums"].choices = [(a.pk, self._album_label(a, user)) for a in self.album_rows]
        self.sample_prompts = dict(sample_prompts or {})
        self.model_sizes: dict[str, int] = {}
        self.model_kinds: dict[str, str] = {}
        default = None
        if base_models is not None:
            self.fields["base_model"].queryset = base_models
            default = base_models.filter(is_default=True).first() or base_models.first()
            self.fields["base_model"].initial = default.name if default else None
            self.model_sizes = {m.name: m.native_size for m in base_models}
            self.model_kinds = {m.name: m.kind for m in base_models}
        # The defaults suit the default model: its own size, and a preset it trains in reasonable time.
        preset = suggested_preset_for(default.native_size if default else None)
        self.fields["preset"].initial = preset
        for name, value in PRESETS[preset].items():
            self.fields[name].initial = value
        if default is not None:
            self.fields["resolution"].initial = default.native_size
            # SDXL and Flux start at bf16 with gradient checkpointing (what fits one GPU); a CPU trains in fp32.
            for name in ("mixed_precision", "gradient_checkpointing"):
                if name in self.fields:
                    self.fields[name].initial = family_default(default.kind, name, self.fields[name].initial)
        # One album only: a newcomer's first run needs no choosing.
        if not self.initial.get("albums") and len(self.album_rows) == 1:
            self.initial["albums"] = [self.album_rows[0].pk]
        chosen = self.initial.get("albums") or []
        if chosen and chosen[0] in self.sample_prompts:
            self.fields["sample_prompt"].initial = self.sample_prompts[chosen[0]]

    @staticmethod
    def _album_label(album, user) -> str:
        count = f"{album.image_count} image{'s' if album.image_count != 1 else ''}"
        # Staff see everyone's albums: say whose an album is when it is not theirs.
        whose = f"{album.owner.get_username()}: " if user is not None and album.owner_id != user.pk else ""
        source = " · training source" if getattr(album, "is_training_source", False) else ""
        return f"{whose}{album.name} ({count}{source})"

    def params(self) -> dict:
        data = {name: self.cleaned_data.get(name) for name in self.advanced}
        data["epochs"] = self.cleaned_data.get("epochs")
        return data

    def add_service_errors(self, exc: RunInputError) -> None:
        names = {"album_ids": "albums"}
        for key, messages in exc.errors.items():
            field = names.get(key, key)
            for message in messages:
                self.add_error(field if field in self.fields else None, message)


class LoraEditForm(forms.Form):
    friendly_name = forms.CharField(max_length=200, required=False)
    default_weight = forms.FloatField(min_value=-4.0, max_value=4.0, widget=forms.NumberInput(attrs={"step": "0.05"}))
    trigger_words = forms.CharField(max_length=300, required=False)
    is_public = forms.BooleanField(required=False, label="Public: everyone may see and generate with it")
