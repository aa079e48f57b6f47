"""Writes for labels: machine results, manual edits, review, labeling jobs, dataset export."""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from gallery.models import Album, Image
from imagineer.jobs import enqueue_job, ensure_queue_available
from imagineer.quotas import quota_check

from .models import MACHINE_SOURCES, CaptionRevision, Label, LabelingJob, LabelKind, LabelSource, ReviewState
from .selectors import album_training_captions

BACKEND_SOURCES = {"local": LabelSource.LOCAL, "tagger": LabelSource.TAGGER, "captioner": LabelSource.CAPTIONER,
                   "claude-docker": LabelSource.CLAUDE, "anthropic": LabelSource.CLAUDE}
# A machine NSFW verdict this sure hides the image from anonymous visitors at once; people can undo it.
NSFW_AUTO_FLAG_CONFIDENCE = 0.6
MAX_TAG_LENGTH = 64
_TAG_CLEAN = re.compile(r"[^\w\s\-'&+.]", re.UNICODE)


class LabelInputError(ValueError):
    pass


def normalise_tag(value: str) -> str:
    tag = " ".join(_TAG_CLEAN.sub(" ", value).split()).strip().lower()
    if not tag:
        raise LabelInputError("A tag needs at least one letter or digit.")
    if len(tag) > MAX_TAG_LENGTH:
        raise LabelInputError(f"Tags are at most {MAX_TAG_LENGTH} characters.")
    return tag


@transaction.atomic
def labels_store_result(*, image: Image, result, source: str, job: LabelingJob | None = None,
                        replace: bool = False) -> int:
    """Write one backend result for one image, all or nothing. Returns how many labels were written.

    `replace` drops this source's earlier labels first (a forced re-run); without it an image
    that already has labels from this source keeps them (running twice changes nothing).
    """
    existing = Label.objects.filter(image=image, source=source)
    old_captions = []
    if replace:
        old_captions = list(existing.filter(kind=LabelKind.CAPTION).values_list("value", flat=True))
        existing.delete()
    elif existing.exists():
        return 0
    common = {"image": image, "source": source, "model": result.model[:100], "model_version": result.version[:100],
              "job": job, "created_by": job.owner if job else None, "review_state": ReviewState.PENDING}
    rows: list[Label] = []
    if result.caption:
        rows.append(Label(kind=LabelKind.CAPTION, value=result.caption.strip(), **common))
    seen: set[tuple[str, str]] = set()
    scores = getattr(result, "tag_confidences", None) or {}
    for kind, values in ((LabelKind.TAG, result.tags), (LabelKind.CATEGORY, result.categories)):
        for raw in values:
            try:
                value = normalise_tag(raw)
            except LabelInputError:
                continue
            if (kind, value) not in seen:
                seen.add((kind, value))
                score = scores.get(raw) if kind == LabelKind.TAG else None
                rows.append(Label(kind=kind, value=value, confidence=score, **common))
    if result.nsfw is not None:
        rows.append(Label(kind=LabelKind.NSFW, value="nsfw" if result.nsfw else "safe",
                          confidence=result.nsfw_confidence, **common))
        if result.nsfw and (result.nsfw_confidence or 0) >= NSFW_AUTO_FLAG_CONFIDENCE and not image.is_nsfw:
            Image.objects.filter(pk=image.pk).update(is_nsfw=True)
    Label.objects.bulk_create(rows)
    new_caption = next((row for row in rows if row.kind == LabelKind.CAPTION), None)
    old_text = old_captions[0] if old_captions else ""
    if replace and (old_captions or new_caption) and old_text != (new_caption.value if new_caption else ""):
        # A forced re-run replaces a machine caption: the image's caption history says so.
        CaptionRevision.objects.create(image=image, label=new_caption if new_caption and new_caption.pk else None,
                                       old_text=old_text, new_text=new_caption.value if new_caption else "",
                                       tool=f"re-run ({source})", user=job.owner if job else None)
    return len(rows)


def label_add_scraped(*, image: Image, alt: str, title: str) -> None:
    """Alt text and title found by a scrape, kept as captions from the scraper (pending review).

    A text the image already has as a scraper caption is not added again. One read and one write per
    image, not a get_or_create per text: a scrape calls this for each of thousands of images.
    """
    texts = list(dict.fromkeys(t.strip()[:2000] for t in (alt, title) if t and t.strip()))
    if not texts:
        return
    have = set(Label.objects.filter(image=image, kind=LabelKind.CAPTION, source=LabelSource.SCRAPER,
                                    value__in=texts).order_by().values_list("value", flat=True))
    Label.objects.bulk_create([
        Label(image=image, kind=LabelKind.CAPTION, source=LabelSource.SCRAPER, value=text,
              review_state=ReviewState.PENDING)
        for text in texts if text not in have
    ])


# Manual edits: always approved, always by the acting person.

def tag_add(*, image: Image, user, value: str, kind: str = LabelKind.TAG) -> Label:
    value = normalise_tag(value)
    label, _ = Label.objects.get_or_create(
        image=image, kind=kind, source=LabelSource.MANUAL, value=value,
        defaults={"created_by": user, "review_state": ReviewState.APPROVED},
    )
    return label


def caption_set(*, image: Image, user, text: str) -> Label | None:
    """The manual caption: one per image; an empty text removes it."""
    text = text.strip()
    if len(text) > 2000:
        raise LabelInputError("Captions are at most 2000 characters.")
    with transaction.atomic():
        old = Label.objects.filter(image=image, kind=LabelKind.CAPTION, source=LabelSource.MANUAL)
        old_text = old.values_list("value", flat=True).first() or ""
        old.delete()
        label = None
        if text:
            label = Label.objects.create(image=image, kind=LabelKind.CAPTION, source=LabelSource.MANUAL,
                                         value=text, created_by=user, review_state=ReviewState.APPROVED)
        if text != old_text:
            CaptionRevision.objects.create(image=image, label=label, old_text=old_text, new_text=text, tool="edit",
                                           user=user)
        return label


@transaction.atomic
def label_update(*, label: Label, user, value: str) -> Label:
    """Editing a machine label's text makes it the person's: it becomes an approved manual label."""
    value = value.strip() if label.kind == LabelKind.CAPTION else normalise_tag(value)
    if not value:
        raise LabelInputError("A label cannot be empty.")
    if label.kind == LabelKind.CAPTION and value != label.value:
        CaptionRevision.objects.create(image_id=label.image_id, label=label, old_text=label.value, new_text=value,
                                       tool="edit", user=user)
    label.value = value
    label.source = LabelSource.MANUAL
    label.created_by = user
    label.review_state = ReviewState.APPROVED
    label.reviewed_by, label.reviewed_at = user, timezone.now()
    label.save()
    return label


def label_remove(*, label: Label) -> None:
    label.delete()


def labels_review(*, user, ids, approve: bool) -> int:
    """Approve or reject machine labels on images the user may edit."""
    # Editors of a shared album review the labels of its images as they edit them (Image.can_edit_captions).
    qs = Label.objects.filter(pk__in=list(ids), source__in=MACHINE_SOURCES, image__trashed_at__isnull=True,
                              image__in=Image.objects.caption_editable_by(user))
    state = ReviewState.APPROVED if approve else ReviewState.REJECTED
    return qs.update(review_state=state, reviewed_by=user, reviewed_at=timezone.now())


# Jobs

def _target_images(*, user, album: Album | None, image_ids: list[int]):
    # Labels are written onto the images, so besides seeing them the user must own them (staff: any).
    if album is not None:
        qs = album.images_visible_to(user)
    else:
        qs = Image.objects.alive().filter(pk__in=image_ids)
    return qs if user.is_staff else qs.filter(owner=user)


@transaction.atomic
def labeling_job_start(*, user, backend: str, album: Album | None = None, image_ids: list[int] | None = None,
                       force: bool = False, enqueue: bool = True) -> LabelingJob:
    """Create and queue a labeling job over an album or a selection of the user's own images.

    Raises LabelInputError, QuotaExceeded (too many labeling jobs queued or running) or QueueUnavailable.
    """
    if backend not in BACKEND_SOURCES:
        raise LabelInputError(f"Unknown backend {backend!r}; choose one of {', '.join(BACKEND_SOURCES)}.")
    if album is None and not image_ids:
        raise LabelInputError("Choose an album or some images to label.")
    if album is not None and not (user.is_staff or album.owner_id == user.pk):
        raise LabelInputError("You can only label your own albums.")
    count = _target_images(user=user, album=album, image_ids=image_ids or []).count()
    if count == 0:
        raise LabelInputError("There is nothing to label: none of the chosen images are yours.")
    if enqueue:
        ensure_queue_available()
        quota_check(user=user, model=LabelingJob)  # raises QuotaExceeded
    job = LabelingJob.objects.create(owner=user, backend=backend, album=album, image_ids=list(image_ids or []),
                                     force=force, counters={"total": count}, message="Waiting for a worker…")
    if enqueue:
        enqueue_job(job)
    return job


def job_images(job: LabelingJob):
    return _target_images(user=job.owner, album=job.album, image_ids=job.image_ids).order_by("pk")


# Dataset export

def _dataset_rows(album: Album, *, user, append_tags: bool) -> list[tuple[Image, str]]:
    # The export hands out originals: only the images `user` may see now, never whatever the album holds.
    images = list(album.images_visible_to(user))
    captions = album_training_captions(album, [i.pk for i in images], append_tags=append_tags)
    return [(image, captions[image.pk]) for image in images]


def dataset_export(*, album: Album, user, fmt: str, out_dir: Path, append_tags: bool = False,
                   repeats: int = 1) -> dict:
    """Write the album as `user` may see it as a training dataset.

    kohya: `<repeats>_<slug>/NNNNN.<ext>` with a `.txt` caption beside each image, and `provenance.jsonl`
    beside the folder ({"file_name", "text", source, licence and opt-out fields} per image).
    jsonl: images plus `metadata.jsonl` (diffusers imagefolder: {"file_name", "text"} per line, plus the same
    provenance and licence fields).
    """
    from gallery.provenance import provenance_map

    if fmt not in ("kohya", "jsonl"):
        raise LabelInputError("The format is kohya or jsonl.")
    rows = _dataset_rows(album, user=user, append_tags=append_tags)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{max(1, repeats)}_{album.slug}" if fmt == "kohya" else out_dir
    target.mkdir(parents=True, exist_ok=True)
    lines = []
    provenance = provenance_map(image for image, _caption in rows)
    provenance_lines = []
    for n, (image, caption) in enumerate(rows, start=1):
        name = f"{n:05d}{Path(image.file.name).suffix.lower()}"
        with default_storage.open(image.file.name, "rb") as src, open(target / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
        if fmt == "kohya":
            (target / f"{n:05d}.txt").write_text(caption + "\n", encoding="utf-8")
            provenance_lines.append(json.dumps({"file_name": f"{target.name}/{name}", "text": caption,
                                                "image_id": image.pk, **provenance[image.pk]}, ensure_ascii=False))
        else:
            lines.append(json.dumps({"file_name": name, "text": caption, **provenance[image.pk]},
                                    ensure_ascii=False))
    if fmt == "jsonl":
        (target / "metadata.jsonl").write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    else:
        (out_dir / "provenance.jsonl").write_text(
            "\n".join(provenance_lines) + ("\n" if provenance_lines else ""), encoding="utf-8")
    return {"images": len(rows), "folder": str(target)}


def dataset_zip(*, album: Album, user, fmt: str, append_tags: bool, work_dir: Path) -> Path:
    folder = work_dir / "dataset"
    dataset_export(album=album, user=user, fmt=fmt, out_dir=folder, append_tags=append_tags)
    archive = work_dir / f"{album.slug}-{fmt}.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder))
    shutil.rmtree(folder, ignore_errors=True)
    return archive


def export_work_dir() -> Path:
    base = Path(settings.WORK_DIR) / "exports"
    base.mkdir(parents=True, exist_ok=True)
    import tempfile

    return Path(tempfile.mkdtemp(dir=base))
