from django import forms

from .backends import BACKEND_NAMES

BACKEND_CHOICES = [
    ("local", "Local (offline: NSFW detection and image-property tags)"),
    ("tagger", "ONNX tagger (offline: WD14-style tags and a rating)"),
    ("captioner", "Captioner (offline: a caption from a small vision-language model)"),
    ("claude-docker", "Claude in a container (captions, tags, categories, NSFW)"),
    ("anthropic", "Claude through the Anthropic API"),
]
assert {name for name, _ in BACKEND_CHOICES} == set(BACKEND_NAMES)


class StartJobForm(forms.Form):
    backend = forms.ChoiceField(choices=BACKEND_CHOICES, initial="local")
    album = forms.IntegerField(required=False, min_value=1)
    ids = forms.CharField(required=False, help_text="Comma-separated image ids, when not an album.")
    force = forms.BooleanField(required=False, label="Label again images that already have labels from it")

    def clean_ids(self):
        raw = self.cleaned_data.get("ids") or ""
        try:
            return [int(part) for part in raw.replace(" ", "").split(",") if part]
        except ValueError:
            raise forms.ValidationError("Image ids must be numbers.")


class TagForm(forms.Form):
    value = forms.CharField(max_length=64, label="Tag")
    kind = forms.ChoiceField(choices=[("tag", "Tag"), ("category", "Category")], required=False)


class CaptionForm(forms.Form):
    text = forms.CharField(max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 3}))


class ExportForm(forms.Form):
    format = forms.ChoiceField(choices=[("kohya", "kohya folder (.txt sidecars)"),
                                        ("jsonl", "metadata.jsonl (diffusers imagefolder)")])
    append_tags = forms.BooleanField(required=False, label="Append tags to captions")
