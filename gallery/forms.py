from django import forms

from .models import Album, ImageSource, NsfwMode


class ImageEditForm(forms.Form):
    title = forms.CharField(max_length=300, required=False)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    is_public = forms.BooleanField(required=False, label="Public", help_text="Everyone can see public images.")
    is_nsfw = forms.BooleanField(required=False, label="NSFW", help_text="Hidden from anonymous visitors.")


class AlbumForm(forms.ModelForm):
    class Meta:
        model = Album
        fields = ["name", "description", "is_public", "is_training_source"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}
        labels = {"is_public": "Public", "is_training_source": "Use as a training source"}


class GridFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=200, label="Search")
    source = forms.ChoiceField(required=False, choices=[("", "Any source"), *ImageSource.choices])
    tag = forms.CharField(required=False, max_length=100)
    album = forms.IntegerField(required=False, min_value=1)
    # "<microseconds since 1970>_<pk>" of the last image shown (date order), or an offset (album order).
    cursor = forms.RegexField(required=False, regex=r"^\d{1,20}(_\d{1,20})?$", max_length=42)


class BulkActionForm(forms.Form):
    ACTIONS = [
        ("add_to_album", "Add to album"),
        ("remove_from_album", "Remove from album"),
        ("make_public", "Make public"),
        ("make_private", "Make private"),
        ("mark_nsfw", "Mark NSFW"),
        ("mark_sfw", "Mark not NSFW"),
        ("trash", "Move to trash"),
        ("restore", "Restore from trash"),
        ("stack", "Stack (under the first selected)"),
        ("unstack", "Take out of their stacks"),
    ]
    action = forms.ChoiceField(choices=ACTIONS)
    ids = forms.CharField(help_text="Comma-separated image ids.")
    album = forms.IntegerField(required=False, min_value=1)
    next = forms.CharField(required=False)

    def clean_ids(self):
        raw = self.cleaned_data["ids"]
        try:
            ids = [int(part) for part in raw.replace(" ", "").split(",") if part]
        except ValueError:
            raise forms.ValidationError("Image ids must be numbers.")
        if not ids:
            raise forms.ValidationError("Select at least one image.")
        if len(ids) > 1000:
            raise forms.ValidationError("Select at most 1000 images at once.")
        return ids


class NsfwPreferenceForm(forms.Form):
    nsfw_mode = forms.ChoiceField(choices=NsfwMode.choices, label="NSFW images")


class ReorderForm(forms.Form):
    ids = forms.CharField()

    def clean_ids(self):
        try:
            return [int(part) for part in self.cleaned_data["ids"].split(",") if part.strip()]
        except ValueError:
            raise forms.ValidationError("Image ids must be numbers.")
