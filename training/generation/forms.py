"""The generate form. The limits and their messages come from the service, so the form, the API and the command
refuse the same things in the same words; the form adds the LoRA picker (a checkbox and a weight per LoRA)."""

from __future__ import annotations

from django import forms
from django.conf import settings

from imagineer.quotas import CostTooHigh, generation_cost_check

from ..ml.generate import GUIDANCE_RANGE, MAX_PROMPT_CHARS, MAX_SEED
from ..ml.modes import HIRES_SCALE_RANGE, MODE_LABELS
from ..models import BaseModel
from . import selectors
from .services import (
    DEFAULT_GUIDANCE,
    DEFAULT_HIRES_STRENGTH,
    DEFAULT_SCHEDULER,
    DEFAULT_STEPS,
    DEFAULT_STRENGTH,
    MAX_MASK_BYTES,
    LoraChoice,
    scheduler_choices,
)

_MASK_PREFIX = "data:image/png;base64,"

# The slider covers the useful range; the API and the command accept the service's wider one.
SLIDER_MIN, SLIDER_MAX, SLIDER_STEP = -1.0, 2.0, 0.05


class GenerateForm(forms.Form):
    prompt = forms.CharField(max_length=MAX_PROMPT_CHARS, strip=True,
                             widget=forms.Textarea(attrs={"rows": 4, "placeholder": "What should the image show?"}),
                             error_messages={"required": "Write a prompt: it cannot be empty."})
    negative_prompt = forms.CharField(max_length=MAX_PROMPT_CHARS, required=False, label="Negative prompt",
                                      widget=forms.Textarea(attrs={"rows": 2, "placeholder": "What to avoid"}))
    base_model = forms.ModelChoiceField(queryset=BaseModel.objects.none(), label="Model", empty_label=None)
    scheduler = forms.ChoiceField(choices=scheduler_choices, initial=DEFAULT_SCHEDULER, label="Sampler")
    steps = forms.IntegerField(initial=DEFAULT_STEPS, widget=forms.NumberInput(attrs={"min": 1}))
    guidance_scale = forms.FloatField(initial=DEFAULT_GUIDANCE, label="CFG scale",
                                      widget=forms.NumberInput(attrs={"step": 0.5, "min": GUIDANCE_RANGE[0],
                                                                      "max": GUIDANCE_RANGE[1]}))
    seed = forms.IntegerField(required=False, help_text="Empty: a random seed (always recorded).",
                              widget=forms.NumberInput(attrs={"min": 0, "max": MAX_SEED, "placeholder": "random"}))
    width = forms.IntegerField(required=False, widget=forms.NumberInput(attrs={"step": 8, "min": 8}),
                               help_text="A multiple of 8; empty: the model's native size.")
    height = forms.IntegerField(required=False, widget=forms.NumberInput(attrs={"step": 8, "min": 8}))
    count = forms.IntegerField(initial=1, label="Images", widget=forms.NumberInput(attrs={"min": 1}))
    mode = forms.ChoiceField(choices=list(MODE_LABELS.items()), initial="txt2img", widget=forms.RadioSelect,
                             required=False)  # absent (API-like posts, old pages): text to image
    source_image = forms.IntegerField(required=False, label="Source image #",
                                      widget=forms.NumberInput(attrs={"min": 1, "placeholder": "image id"}),
                                      error_messages={"invalid": "Pick a source image."})
    strength = forms.FloatField(required=False, initial=DEFAULT_STRENGTH, label="Denoising strength",
                                help_text="0 keeps the source, 1 ignores it.",
                                widget=forms.NumberInput(attrs={"step": 0.05, "min": 0, "max": 1}))
    # The mask the canvas (static/js/generate.js) paints, as a PNG data URL; white is repainted.
    mask = forms.CharField(required=False, widget=forms.HiddenInput,
                           max_length=len(_MASK_PREFIX) + MAX_MASK_BYTES * 4 // 3 + 4)
    hires_scale = forms.FloatField(required=False, initial=1.0, label="Hires upscale",
                                   help_text="1 = off; e.g. 2 generates, upscales 2×, then refines.",
                                   widget=forms.NumberInput(attrs={"step": 0.25, "min": HIRES_SCALE_RANGE[0],
                                                                   "max": HIRES_SCALE_RANGE[1]}))
    hires_steps = forms.IntegerField(required=False, initial=0, label="Hires steps",
                                     help_text="0 = the same as steps.", widget=forms.NumberInput(attrs={"min": 0}))
    hires_strength = forms.FloatField(required=False, initial=DEFAULT_HIRES_STRENGTH, label="Hires denoising",
                                      widget=forms.NumberInput(attrs={"step": 0.05, "min": 0, "max": 1}))

    def __init__(self, *args, user, lora_weights: dict[int, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["base_model"].queryset = selectors.base_models()
        if "base_model" not in self.initial:
            default = BaseModel.default()
            if default is not None:
                self.initial["base_model"] = default.pk
        for name, setting in (("steps", "GENERATE_MAX_STEPS"), ("count", "GENERATE_MAX_COUNT")):
            self.fields[name].widget.attrs["max"] = getattr(settings, setting)
        for name in ("width", "height"):
            self.fields[name].widget.attrs["max"] = settings.GENERATE_MAX_SIDE
        self.usable_loras = list(selectors.usable_loras(user))
        # Unbound: which LoRAs start ticked, with which weights (from "use these settings").
        self.initial_lora_weights = dict(lora_weights or {})
        self.lora_choices: list[LoraChoice] = []

    def _posted_weight(self, pk: int, problems: list[str], name: str) -> float | None:
        raw = (self.data.get(f"weight_{pk}") or "").strip()
        if not raw:
            return None
        try:
            return float(raw)
        except ValueError:
            problems.append(f"the weight of LoRA {name!r} is not a number")
            return None

    def clean_mask(self) -> bytes:
        import base64
        import binascii

        raw = (self.cleaned_data.get("mask") or "").strip()
        if not raw:
            return b""
        if not raw.startswith(_MASK_PREFIX):
            raise forms.ValidationError("The mask must be a PNG painted on the page.")
        try:
            return base64.b64decode(raw[len(_MASK_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise forms.ValidationError("The mask could not be read; paint it again.") from None

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("mode") != "inpaint":
            cleaned["mask"] = b""  # a mask left on the canvas is not sent with another mode
        by_pk = {lora.pk: lora for lora in self.usable_loras}
        problems: list[str] = []
        choices: list[LoraChoice] = []
        for raw in self.data.getlist("lora") if hasattr(self.data, "getlist") else []:
            try:
                pk = int(raw)
            except (TypeError, ValueError):
                problems.append(f"{raw!r} is not a LoRA")
                continue
            lora = by_pk.get(pk)
            if lora is None:
                problems.append(f"there is no LoRA #{pk} that you may use")
                continue
            choices.append(LoraChoice(lora, self._posted_weight(pk, problems, lora.name)))
        if problems:
            raise forms.ValidationError("Cannot use these LoRAs: " + "; ".join(problems) + ".")
        self.lora_choices = choices
        self._check_cost(cleaned)
        return cleaned

    def _check_cost(self, cleaned: dict) -> None:
        """The cost ceiling, shown next to the field to change; values out of their own range are the service's."""
        base, steps, count = cleaned.get("base_model"), cleaned.get("steps"), cleaned.get("count")
        if base is None or steps is None or count is None:
            return
        side = base.native_size
        width, height = cleaned.get("width") or side, cleaned.get("height") or side
        in_range = (1 <= steps <= settings.GENERATE_MAX_STEPS and 1 <= count <= settings.GENERATE_MAX_COUNT
                    and all(8 <= v <= settings.GENERATE_MAX_SIDE for v in (width, height)))
        if not in_range:
            return
        try:
            generation_cost_check(width=width, height=height, count=count, steps=steps)
        except CostTooHigh as exc:
            self.add_error(exc.field, str(exc))

    def generation_kwargs(self) -> dict:
        data = self.cleaned_data
        return {
            "prompt": data["prompt"],
            "negative_prompt": data.get("negative_prompt") or "",
            "base_model": data["base_model"],
            "loras": self.lora_choices,
            "scheduler": data["scheduler"],
            "steps": data["steps"],
            "guidance_scale": data["guidance_scale"],
            "seed": data.get("seed"),
            "width": data.get("width"),
            "height": data.get("height"),
            "count": data["count"],
            "mode": data.get("mode") or "txt2img",
            "source_image": data.get("source_image"),
            "mask_png": data.get("mask") or b"",
            "strength": data.get("strength"),
            "hires_scale": data.get("hires_scale"),
            "hires_steps": data.get("hires_steps"),
            "hires_strength": data.get("hires_strength"),
        }

    def add_service_error(self, exc) -> None:
        """Show a service refusal beside the fields it names (others above the form)."""
        named = getattr(exc, "fields", None) or {}
        shown = {name: text for name, text in named.items() if name in self.fields}
        for name, text in shown.items():
            self.add_error(name, text if text.endswith(".") else text + ".")
        if len(shown) < len(named) or not named:
            self.add_error(None, str(exc))

    def source(self):
        """The chosen source image if the user may see it (for the page's preview), else None."""
        from gallery.models import Image

        value = self.data.get("source_image") if self.is_bound else self.initial.get("source_image")
        try:
            pk = int(value)
        except (TypeError, ValueError):
            return None
        return Image.objects.accessible_to(self.user).filter(pk=pk).first()

    def mask_data_url(self) -> str:
        """The mask to draw back onto the canvas (posted, or restored from a job)."""
        import base64

        if self.is_bound:
            value = self.data.get("mask") or ""
            return value if value.startswith(_MASK_PREFIX) else ""
        data = self.initial.get("mask_png") or b""
        return _MASK_PREFIX + base64.b64encode(bytes(data)).decode() if data else ""

    def lora_rows(self) -> list[dict]:
        """One row per LoRA the user may pick: ticked or not, with the weight its slider shows."""
        if self.is_bound:
            ticked = {str(v) for v in self.data.getlist("lora")} if hasattr(self.data, "getlist") else set()
            weights = {}
            for lora in self.usable_loras:
                try:
                    weights[lora.pk] = float(self.data.get(f"weight_{lora.pk}") or lora.default_weight)
                except ValueError:
                    weights[lora.pk] = lora.default_weight
            checked = {lora.pk for lora in self.usable_loras if str(lora.pk) in ticked}
        else:
            weights = {lora.pk: self.initial_lora_weights.get(lora.pk, lora.default_weight)
                       for lora in self.usable_loras}
            checked = set(self.initial_lora_weights)
        return [{"lora": lora, "checked": lora.pk in checked, "weight": weights[lora.pk],
                 "slider_min": min(SLIDER_MIN, weights[lora.pk]), "slider_max": max(SLIDER_MAX, weights[lora.pk])}
                for lora in self.usable_loras]

    def selected_base_model_pk(self):
        if self.is_bound:
            return str(self.data.get("base_model") or "")
        value = self.initial.get("base_model")
        return str(value.pk if isinstance(value, BaseModel) else value or "")
