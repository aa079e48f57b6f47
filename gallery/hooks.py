"""Extension points other apps fill in their AppConfig.ready(), so gallery never imports them.

- `search_hooks`: functions term -> Q over Image, OR-ed into the gallery search (labels plug in here).
- `tag_filter`: function tag -> queryset of Image ids carrying that tag.
- `lineage_hooks`: functions image -> list of {"label", "text", "url"} rows for the image page.
- `detail_panels`: (template name, context function(request, image) -> dict) shown on the image page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

search_hooks: list[Callable[[str], Any]] = []
tag_filter: Callable[[str], Any] | None = None
lineage_hooks: list[Callable[[Any], list[dict]]] = []
detail_panels: list[tuple[str, Callable[[Any, Any], dict]]] = []


def set_tag_filter(func: Callable[[str], Any]) -> None:
    global tag_filter
    tag_filter = func

# (button label, URL name) pairs shown in the bulk-selection toolbar; the form posts `ids` to that URL.
bulk_actions: list[tuple[str, str]] = []

# Texts found beside an image where it came from (a scrape's alt text and title): functions called as
# hook(image=, alt=, title=). Labeling registers one that keeps them as labels with source "scraper".
found_text_hooks: list[Callable[..., Any]] = []

# Function [image ids] -> {image id: {"tags": [...], "training_caption": "..."}} for the images' JSON in the
# API, one call per page; labeling sets it (an image's labels are labeling's, but API clients want them
# with the image).
image_label_summaries: Callable[[list[int]], dict[int, dict]] | None = None


def set_image_label_summaries(func: Callable[[list[int]], dict[int, dict]]) -> None:
    global image_label_summaries
    image_label_summaries = func
