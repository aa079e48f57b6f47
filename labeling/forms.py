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


class TriggerWordForm(forms.Form):
    trigger_word = forms.CharField(max_length=100, required=False, label="Trigger word")


class TemplateForm(forms.Form):
    template = forms.CharField(max_length=300, required=False, label="Caption template",
                               help_text="Placeholders: {trigger}, {tags}, {caption}. Empty: the plain caption.")


class FindReplaceForm(forms.Form):
    find = forms.CharField(max_length=200, strip=False)
    replace = forms.CharField(max_length=200, required=False, strip=False)
    regex = forms.BooleanField(required=False, label="Regular expression")
    ignore_case = forms.BooleanField(required=False, label="Ignore case")


class BulkTagForm(forms.Form):
    tag = forms.CharField(max_length=64)
    action = forms.ChoiceField(choices=[("add", "Add"), ("remove", "Remove")])


class RenameTagsForm(forms.Form):
    tags = forms.CharField(help_text="The tags to rename (one per field value).", required=False)
    to = forms.CharField(max_length=64, label="New name")
