"""Reads for labels: training captions, tag counts, analytics, the review queue."""

from __future__ import annotations

from collections import defaultdict

from django.db.models import Count, Q

from .models import MACHINE_SOURCES, Label, LabelKind, LabelSource, ReviewState


def caption_parts(image_ids: list[int]) -> dict[int, tuple[str, list[str]]]:
    """Each image's (caption, tags): its manual caption, else its first approved machine caption, else "";
    and its usable tags in the order they were added. One query for any number of images."""
    rows = (Label.objects.filter(image_id__in=image_ids).usable()
            .filter(kind__in=[LabelKind.CAPTION, LabelKind.TAG])
            .order_by("image_id", "created_at", "pk")
            .values_list("image_id", "kind", "value", "source", "review_state"))
    manual: dict[int, str] = {}
    approved: dict[int, str] = {}
    tags: dict[int, list[str]] = defaultdict(list)
    for image_id, kind, value, source, state in rows:
        if kind == LabelKind.CAPTION:
            if source == LabelSource.MANUAL:
                manual[image_id] = value
            elif state == ReviewState.APPROVED:
                approved.setdefault(image_id, value)
        elif value not in tags[image_id]:
            tags[image_id].append(value)
    return {i: (manual.get(i) or approved.get(i) or "", tags[i]) for i in image_ids}


def training_captions(image_ids: list[int], *, fallback: str = "", append_tags: bool = False) -> dict[int, str]:
    """The caption each image trains with: its manual caption, else an approved machine caption,
    else its tags joined, else `fallback` (the album name). One query for any number of images."""
    captions = {}
    for image_id, (caption, tags) in caption_parts(image_ids).items():
        if caption and append_tags and tags:
            caption = f"{caption}, {', '.join(tags)}"
        captions[image_id] = caption or ", ".join(tags) or fallback
    return captions


def image_label_summaries(image_ids: list[int]) -> dict[int, dict]:
    """Each image's usable tags and training caption, for the images' JSON in the API. One query."""
    return {image_id: {"tags": tags, "training_caption": caption or ", ".join(tags)}
            for image_id, (caption, tags) in caption_parts(image_ids).items()}


def album_training_captions(album, image_ids: list[int], *, append_tags: bool = False) -> dict[int, str]:
    """What each of an album's images trains and exports with: the album's caption template when it has
    one, else the plain training caption; the album's trigger word first unless the template places it.
    Training runs freeze this into their snapshot."""
    from .captions import apply_trigger, render_template
    from .models import CaptionTemplate

    template = CaptionTemplate.objects.filter(album=album).values_list("template", flat=True).first() or ""
    trigger = getattr(album, "trigger_word", "") or ""
    if not template:
        plain = training_captions(image_ids, fallback=album.name, append_tags=append_tags)
        return {i: apply_trigger(text, trigger) for i, text in plain.items()}
    captions = {}
    for image_id, (caption, tags) in caption_parts(image_ids).items():
        text = render_template(template, trigger=trigger, tags=tags, caption=caption) or album.name
        captions[image_id] = text if "{trigger}" in template else apply_trigger(text, trigger)
    return captions


def tag_counts(images_qs, *, limit: int = 200) -> list[tuple[str, int]]:
    rows = (Label.objects.filter(image__in=images_qs, kind=LabelKind.TAG).usable()
            .values("value").annotate(n=Count("image", distinct=True)).order_by("-n", "value")[:limit])
    return [(row["value"], row["n"]) for row in rows]


def analytics(images_qs) -> dict:
    total = images_qs.count()
    nsfw = images_qs.filter(is_nsfw=True).count()
    captioned = images_qs.filter(
        Q(labels__kind=LabelKind.CAPTION) & ~Q(labels__review_state=ReviewState.REJECTED)
    ).distinct().count()
    labelled = images_qs.filter(labels__isnull=False).distinct().count()
    counts = tag_counts(images_qs)
    top = counts[0][1] if counts else 1
    cloud = [(tag, n, 1 + round(4 * n / top)) for tag, n in sorted(counts[:80])]
    by_source = dict(Label.objects.filter(image__in=images_qs).values_list("source").annotate(n=Count("pk")))
    pending = Label.objects.filter(image__in=images_qs, source__in=MACHINE_SOURCES).pending().count()
    return {
        "total": total, "nsfw": nsfw, "nsfw_share": (nsfw / total) if total else 0.0,
        "captioned": captioned, "without_caption": total - captioned, "labelled": labelled,
        "tag_counts": counts, "cloud": cloud, "by_source": by_source, "pending": pending,
    }


def all_tags(prefix: str = "", *, user=None, limit: int = 20) -> list[str]:
    qs = Label.objects.filter(kind=LabelKind.TAG).usable()
    if user is not None and not user.is_staff:
        qs = qs.filter(Q(image__owner=user) | Q(image__is_public=True))
    if prefix:
        qs = qs.filter(value__istartswith=prefix.strip().lower())
    return list(qs.values_list("value", flat=True).annotate(n=Count("pk")).order_by("-n", "value")[:limit])


def review_queue(user):
    return (Label.objects.for_user_images(user).filter(source__in=MACHINE_SOURCES).pending()
            .select_related("image").order_by("image_id", "kind", "pk"))
