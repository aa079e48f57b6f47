from __future__ import annotations

from django import forms

from gallery.models import Album

from .models import OptOutPolicy, Outcome
from .services import DEFAULTS, LIMITS, MAX_DOMAINS, ScrapeInputError, normalise_domains, start_url_problem


def _int_field(name: str, label: str, help_text: str = "") -> forms.IntegerField:
    low, high = LIMITS[name]
    return forms.IntegerField(label=label, min_value=int(low), max_value=int(high), initial=DEFAULTS[name],
                              help_text=help_text)


class ScrapeStartForm(forms.Form):
    start_url = forms.CharField(label="Start URL", max_length=2000,
                                widget=forms.URLInput(attrs={"placeholder": "https://example.com/gallery/",
                                                             "autofocus": True}),
                                help_text="Only public http(s) sites: private and local addresses are refused.")
    album = forms.TypedChoiceField(label="Into album", coerce=int, required=False, empty_value=None)
    album_name = forms.CharField(label="New album name", max_length=200, required=False,
                                 help_text="When no existing album is chosen; default: the site's host name.")
    max_pages = _int_field("max_pages", "Max pages")
    max_images = _int_field("max_images", "Max images")
    depth = _int_field("depth", "Link depth", "0: the start page only.")
    allowed_domains = forms.CharField(label="Allowed domains", required=False, max_length=2000,
                                      help_text=f"Pages on these domains are followed (up to {MAX_DOMAINS}, "
                                                "space or comma separated); default: the start URL's host.")
    min_width = _int_field("min_width", "Min width (px)")
    min_height = _int_field("min_height", "Min height (px)")
    min_bytes = _int_field("min_bytes", "Min file size (bytes)")
    obey_robots = forms.BooleanField(label="Obey robots.txt", required=False, initial=DEFAULTS["obey_robots"])
    optout_policy = forms.ChoiceField(
        label="AI opt-outs", choices=OptOutPolicy.choices, initial=OptOutPolicy.RESPECT, required=False,
        help_text="X-Robots-Tag noai/noimageai/noindex/noimageindex, meta robots and TDMRep reservations. "
                  "Opted-out images are listed, not imported. Only staff may ignore them.",
    )
    delay = forms.FloatField(label="Delay between requests (s)", min_value=LIMITS["delay"][0],
                             max_value=LIMITS["delay"][1], initial=DEFAULTS["delay"])
    autothrottle = forms.BooleanField(label="AutoThrottle (adapt to the site's speed)", required=False,
                                      initial=DEFAULTS["autothrottle"])

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.user = user
        self.albums = {a.pk: a for a in Album.objects.filter(owner=user).order_by("name")}
        self.fields["album"].choices = [("", "A new album"), *((pk, a.name) for pk, a in self.albums.items())]
        if not user.is_staff:
            self.fields["optout_policy"].choices = [(OptOutPolicy.RESPECT, OptOutPolicy.RESPECT.label)]

    def clean_start_url(self) -> str:
        url = self.cleaned_data["start_url"].strip()
        problem = start_url_problem(url)
        if problem:
            raise forms.ValidationError(f"This URL cannot be scraped: {problem}.")
        return url

    def clean_optout_policy(self) -> str:
        return self.cleaned_data.get("optout_policy") or OptOutPolicy.RESPECT

    def clean_allowed_domains(self) -> list[str]:
        try:
            return normalise_domains(self.cleaned_data.get("allowed_domains") or "")
        except ScrapeInputError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean(self):
        cleaned = super().clean()
        album_id = cleaned.get("album")
        cleaned["album"] = self.albums.get(album_id) if album_id else None
        return cleaned

    def service_arguments(self) -> dict:
        data = dict(self.cleaned_data)
        return {"start_url": data.pop("start_url"), "album": data.pop("album"), "album_name": data.pop("album_name"),
                "allowed_domains": data.pop("allowed_domains"), **data}


class ItemFilterForm(forms.Form):
    outcome = forms.ChoiceField(choices=[("", "All"), *Outcome.choices], required=False)
    page = forms.IntegerField(min_value=1, required=False)
