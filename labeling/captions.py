"""Caption tools on an album: trigger word, find & replace, bulk tags, tag rename/merge, caption template.

The album's owner, staff and its editors use them (Album.can_edit_captions). Each tool touches only the album's
images whose captions the acting person may edit (Album.caption_editable_images), and only the labels it names.
Every change to a caption's text is recorded as a CaptionRevision; training runs keep the captions they
froze in their snapshot, whatever these tools do later.
"""

from __future__ import annotations

import re
import string

from django.db import transaction

from gallery.models import Album, Image

from .models import CaptionRevision, CaptionTemplate, Label, LabelKind, LabelSource, ReviewState
from .services import LabelInputError, normalise_tag

TEMPLATE_FIELDS = ("trigger", "tags", "caption")
MAX_TRIGGER_LENGTH = 100
MAX_FIND_LENGTH = 200
_SEPARATORS = re.compile(r"\s*,(?:\s*,)*\s*")


def apply_trigger(caption: str, trigger: str) -> str:
    """The caption with the trigger word first, unless it already holds it as one of its comma-separated parts."""
    trigger = trigger.strip()
    if not trigger:
        return caption
    parts = [part.strip().lower() for part in caption.split(",")]
    if trigger.lower() in parts:
        return caption
    return f"{trigger}, {caption}" if caption else trigger


def check_template(template: str) -> str:
    """The template stripped, or LabelInputError naming what is wrong with it."""
    template = template.strip()
    if not template:
        raise LabelInputError("The template is empty.")
    if len(template) > 300:
        raise LabelInputError("Templates are at most 300 characters.")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise LabelInputError(f"The template is malformed: {exc} (write {{{{ and }}}} for literal braces).")
    used = set()
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in TEMPLATE_FIELDS or spec or conversion:
            allowed = ", ".join(f"{{{name}}}" for name in TEMPLATE_FIELDS)
            raise LabelInputError(f"Unknown placeholder {{{field}}}: use {allowed}.")
        used.add(field)
    if not used & {"tags", "caption"}:
        raise LabelInputError("The template needs {tags} or {caption}.")
    return template


def render_template(template: str, *, trigger: str, tags: list[str], caption: str) -> str:
    """The template filled in; empty parts leave no stray commas behind."""
    text = template.format(trigger=trigger.strip(), tags=", ".join(tags), caption=caption.strip())
    text = _SEPARATORS.sub(", ", text)
    return " ".join(text.split()).strip(" ,")


def _check_album(album: Album, user) -> None:
    if not album.can_edit_captions(user):
        raise LabelInputError("You can only change captions of albums you own or edit.")


def _editable_images(album: Album, user):
    _check_album(album, user)
    return album.caption_editable_images(user)


def _revise(label: Label, new_text: str, *, tool: str, user) -> None:
    CaptionRevision.objects.create(image_id=label.image_id, label=label, old_text=label.value, new_text=new_text,
                                   tool=tool, user=user)


@transaction.atomic
def album_trigger_word_set(*, album: Album, user, word: str) -> Album:
    _check_album(album, user)
    word = " ".join(word.split())
    if len(word) > MAX_TRIGGER_LENGTH or "," in word:
        raise LabelInputError(f"A trigger word is at most {MAX_TRIGGER_LENGTH} characters, without commas.")
    album.trigger_word = word
    album.save(update_fields=["trigger_word"])
    return album


@transaction.atomic
def album_template_set(*, album: Album, user, template: str) -> CaptionTemplate | None:
    """Set the album's caption template; an empty one goes back to the plain training caption."""
    _check_album(album, user)
    if not template.strip():
        CaptionTemplate.objects.filter(album=album).delete()
        return None
    template = check_template(template)
    row, _ = CaptionTemplate.objects.update_or_create(album=album, defaults={"template": template,
                                                                             "updated_by": user})
    return row


@transaction.atomic
def captions_find_replace(*, album: Album, user, find: str, replace: str, regex: bool = False,
                          ignore_case: bool = False) -> int:
    """Replace text in the captions of the album's images (rejected ones aside). Returns how many changed."""
    if not find or len(find) > MAX_FIND_LENGTH:
        raise LabelInputError(f"Enter the text to find (at most {MAX_FIND_LENGTH} characters).")
    flags = re.IGNORECASE if ignore_case else 0
    try:
        pattern = re.compile(find if regex else re.escape(find), flags)
    except re.error as exc:
        raise LabelInputError(f"The pattern is not a valid regular expression: {exc}.")
    changed = 0
    labels = (Label.objects.filter(image__in=_editable_images(album, user), kind=LabelKind.CAPTION).usable()
              .select_for_update().order_by("pk"))
    for label in labels:
        try:
            new = pattern.sub(replace if regex else replace.replace("\\", "\\\\"), label.value)
        except (re.error, IndexError) as exc:
            raise LabelInputError(f"The replacement is not valid: {exc}.")
        new = " ".join(new.split())
        if new == label.value:
            continue
        if not new:
            raise LabelInputError(f"Replacing would leave image {label.image_id}'s caption empty; nothing changed.")
        if len(new) > 2000:
            raise LabelInputError(f"Replacing would make image {label.image_id}'s caption too long; nothing changed.")
        _revise(label, new, tool="replace", user=user)
        label.value = new
        label.save(update_fields=["value"])
        changed += 1
    return changed


@transaction.atomic
def album_tag_add(*, album: Album, user, tag: str) -> int:
    """Give every editable image of the album the tag (as an approved manual tag). Returns how many got it."""
    value = normalise_tag(tag)
    editable = _editable_images(album, user)
    tagged = set(Label.objects.usable().filter(image__in=editable, kind=LabelKind.TAG, value=value)
                 .values_list("image_id", flat=True))
    images = [image for image in editable if image.pk not in tagged]
    Label.objects.bulk_create([Label(image=image, kind=LabelKind.TAG, value=value, source=LabelSource.MANUAL,
                                     created_by=user, review_state=ReviewState.APPROVED) for image in images])
    return len(images)


@transaction.atomic
def album_tag_remove(*, album: Album, user, tag: str) -> int:
    """Remove the tag, whoever added it, from the album's editable images. Returns how many labels went."""
    value = normalise_tag(tag)
    deleted, _ = Label.objects.filter(image__in=_editable_images(album, user), kind=LabelKind.TAG,
                                      value=value).delete()
    return deleted


@transaction.atomic
def album_tags_rename(*, album: Album, user, tags: list[str], to: str) -> int:
    """Rename one tag, or merge several into one, on the album's editable images. An image ends up with
    one label of the new name: its manual one where it has one (people's labels win), else the oldest.
    Returns how many labels changed or went."""
    target = normalise_tag(to)
    sources = {normalise_tag(tag) for tag in tags} - {target}
    if not sources:
        raise LabelInputError("Choose at least one tag other than the new name.")
    images = _editable_images(album, user)
    has_target = set(Label.objects.filter(image__in=images, kind=LabelKind.TAG, value=target)
                     .values_list("image_id", flat=True))
    labels = Label.objects.filter(image__in=images, kind=LabelKind.TAG, value__in=sources).select_for_update()
    changed = 0
    for label in sorted(labels, key=lambda lbl: (lbl.source != LabelSource.MANUAL, lbl.pk)):
        if label.image_id in has_target:
            label.delete()
        else:
            label.value = target
            label.save(update_fields=["value"])
            has_target.add(label.image_id)
        changed += 1
    return changed


def caption_history(image: Image, user) -> dict:
    """An image's caption history: the captions it has now, every recorded change, and each training run
    (that `user` may open) with the caption its snapshot froze, newest first."""
    from . import hooks
    from .selectors import album_training_captions, training_captions

    current = training_captions([image.pk])[image.pk]
    revisions = list(CaptionRevision.objects.filter(image=image).select_related("user"))
    runs = []
    for hook in hooks.caption_usage_hooks:
        runs.extend(hook(image, user))
    runs.sort(key=lambda run: run["created_at"], reverse=True)
    # A run trained with its album's trigger word and template: compare with what that album gives now.
    now_by_album: dict = {}
    for run in runs:
        album_id = run.get("album_id")
        if album_id not in now_by_album:
            album = Album.objects.filter(pk=album_id).first() if album_id else None
            now_by_album[album_id] = (album_training_captions(album, [image.pk])[image.pk] if album
                                      else current)
        run["is_current"] = run["caption"] == now_by_album[album_id]
    events = ([{"kind": "revision", "at": r.created_at, "revision": r} for r in revisions]
              + [{"kind": "run", "at": run["created_at"], "run": run} for run in runs])
    events.sort(key=lambda event: event["at"], reverse=True)
    return {
        "current": current,
        "captions": list(Label.objects.filter(image=image, kind=LabelKind.CAPTION).order_by("created_at", "pk")),
        "runs": runs,
        "events": events,
    }
