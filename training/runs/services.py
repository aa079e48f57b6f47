"""Writes for training: base models, runs (create, cancel, resume), the LoRA registry, and clean-up."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from gallery.models import Album
from imagineer.jobs import enqueue_job, ensure_queue_available, job_cancel
from imagineer.models import JobStatus
from imagineer.quotas import CostTooHigh, quota_check, training_cost_check
from labeling.selectors import training_captions

from ..models import BaseModel, LoraModel, ModelKind, SourceType, TrainingRun, TrainingStage
from .params import RunInputError, clean_params

RUN_NAME_MAX = 100
LOG_NAME = "train.log"
DATASET_DIR = "training"  # under WORK_DIR: the temporary dataset folders of running jobs
_MODEL_CLASSES = {"StableDiffusionPipeline": ModelKind.SD15, "StableDiffusionXLPipeline": ModelKind.SDXL}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class RunStateError(ValueError):
    """The run is not in a state that allows this (e.g. resuming a run that is still running)."""


class BaseModelInvalid(ValueError):
    pass


# --- base models ------------------------------------------------------------------------------------


def detect_kind(source: str, source_type: str) -> str | None:
    """The model kind a diffusers folder declares in model_index.json (cheap: no weights are read)."""
    if source_type != SourceType.FOLDER:
        return None
    try:
        found = json.loads((Path(source) / "model_index.json").read_text()).get("_class_name", "")
    except (OSError, ValueError):
        return None
    return _MODEL_CLASSES.get(found)


def detect_native_resolution(source: str, source_type: str) -> int | None:
    """The pixel size a diffusers folder's UNet works at: its latent sample_size times the VAE's scale factor
    (2 per down block after the first), as diffusers' pipelines compute their default size. Cheap: two small
    JSON files. None when the folder does not say (single files and hub ids: the kind's usual size applies)."""
    if source_type != SourceType.FOLDER:
        return None
    try:
        sample_size = json.loads((Path(source) / "unet" / "config.json").read_text()).get("sample_size")
        blocks = json.loads((Path(source) / "vae" / "config.json").read_text()).get("block_out_channels")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(sample_size, list) and sample_size:  # (height, width): square models are what we train
        sample_size = sample_size[0]
    if type(sample_size) is not int or not isinstance(blocks, list) or not blocks:
        return None
    size = sample_size * 2 ** (len(blocks) - 1)
    return size if 16 <= size <= 2048 and size % 8 == 0 else None  # the sizes a run may train at


def check_base_model_source(*, source: str, kind: str, source_type: str) -> None:
    """Raise BaseModelInvalid with a reason when the source cannot be the model it claims to be."""
    if kind not in ModelKind.values:
        raise BaseModelInvalid(f"The kind must be one of {', '.join(ModelKind.values)}.")
    if source_type == SourceType.FOLDER:
        path = Path(source).expanduser()
        if not path.is_dir():
            raise BaseModelInvalid(f"{source} is not a folder.")
        if not (path / "model_index.json").is_file():
            raise BaseModelInvalid(f"{source} is not a diffusers model folder (it has no model_index.json).")
        found = detect_kind(str(path), source_type)
        if found is None:
            raise BaseModelInvalid(f"{source} holds neither a Stable Diffusion 1.5 nor an SDXL pipeline.")
        if found != kind:
            raise BaseModelInvalid(f"{source} is an {found} model, not {kind}.")
    elif source_type == SourceType.SINGLE_FILE:
        path = Path(source).expanduser()
        if not path.is_file():
            raise BaseModelInvalid(f"{source} is not a file.")
        if path.suffix.lower() not in (".safetensors", ".ckpt"):
            raise BaseModelInvalid(f"{path.name} is not a .safetensors or .ckpt checkpoint.")
    elif source_type == SourceType.HUB:
        if not _HUB_ID.match(source):
            raise BaseModelInvalid(f"{source!r} is not a hub id like 'owner/model'.")
    else:
        raise BaseModelInvalid(f"The source type must be one of {', '.join(SourceType.values)}.")


@transaction.atomic
def base_model_register(*, name: str, source: str, kind: str | None = None, source_type: str | None = None,
                        make_default: bool = False, description: str = "") -> BaseModel:
    """Register (or re-point) a base model by name. The kind of a diffusers folder is read from it."""
    from training.ml.pipelines import detect_source_type  # cheap module: no heavy imports at its top

    if not re.fullmatch(r"[-a-zA-Z0-9_]{1,100}", name or ""):
        raise BaseModelInvalid("The name must be 1–100 letters, digits, '-' or '_'.")
    source = str(Path(source).expanduser().resolve()) if Path(source).expanduser().exists() else source
    source_type = source_type or detect_source_type(source)
    kind = kind or detect_kind(source, source_type) or ModelKind.SD15
    check_base_model_source(source=source, kind=kind, source_type=source_type)
    model, _ = BaseModel.objects.update_or_create(
        name=name, defaults={"source": source, "kind": kind, "source_type": source_type, "description": description,
                             "native_resolution": detect_native_resolution(source, source_type)}
    )
    if make_default:
        base_model_set_default(model=model)
    return model


@transaction.atomic
def base_model_set_default(*, model: BaseModel) -> None:
    BaseModel.objects.filter(is_default=True).exclude(pk=model.pk).update(is_default=False)
    BaseModel.objects.filter(pk=model.pk).update(is_default=True)
    model.is_default = True


# --- runs -------------------------------------------------------------------------------------------


def dataset_snapshot(*, user, albums: Sequence[Album]) -> list[dict[str, Any]]:
    """The frozen dataset: every image of the albums that the user may see, with the caption used.

    An image in several albums appears once, captioned with the first album's name as the fallback.
    """
    entries: list[dict[str, Any]] = []
    seen: set[int] = set()
    for album in albums:
        images = [img for img in album.images_visible_to(user) if img.pk not in seen]
        captions = training_captions([img.pk for img in images], fallback=album.name)
        for img in images:
            seen.add(img.pk)
            entries.append({"image_id": img.pk, "sha256": img.sha256, "caption": captions[img.pk],
                            "file": img.file.name, "album_id": album.pk})
    return entries


def _resolve_albums(user, album_ids: Iterable[int]) -> list[Album]:
    ids = list(dict.fromkeys(int(i) for i in album_ids))
    if not ids:
        raise RunInputError({"album_ids": "Choose at least one album."})
    found = {a.pk: a for a in Album.objects.filter(pk__in=ids)}
    missing = [i for i in ids if i not in found or not found[i].can_edit(user)]
    if missing:
        # Someone else's album is reported like a missing one: its existence is not ours to reveal.
        raise RunInputError({"album_ids": f"No album of yours with id {', '.join(map(str, missing))}."})
    return [found[i] for i in ids]


def _default_name(albums: Sequence[Album]) -> str:
    names = ", ".join(a.name for a in albums)
    if len(names) > 70:
        names = names[:69] + "…"
    return f"{names} {timezone.localtime():%Y-%m-%d %H:%M}"


def resolve_base_model(name: str | None) -> BaseModel:
    if name:
        model = BaseModel.objects.filter(name=name).first()
        if model is None:
            raise RunInputError({"base_model": f"No base model named {name!r}."})
        return model
    model = BaseModel.default()
    if model is None:
        raise RunInputError({"base_model": "No base model is registered yet: run `manage.py build_tiny_model` "
                                           "or register one with `manage.py register_model`."})
    return model


def run_create(*, owner, album_ids: Iterable[int], params: dict[str, Any], name: str = "",
               base_model: BaseModel | str | None = None, enqueue: bool = True) -> TrainingRun:
    """Validate, freeze the dataset, create the run and queue it. Raises RunInputError (also for more work than
    TRAIN_MAX_COST allows), QuotaExceeded (the owner has too many runs queued or running) or QueueUnavailable.

    Nothing is written unless everything is valid and the queue is reachable.
    """
    errors: dict[str, list[str]] = {}
    albums: list[Album] = []
    try:
        albums = _resolve_albums(owner, album_ids)
    except RunInputError as exc:
        errors.update(exc.errors)
    model = base_model if isinstance(base_model, BaseModel) else None
    if model is None:
        try:
            model = resolve_base_model(base_model)
        except RunInputError as exc:
            errors.update(exc.errors)
    name = (name or "").strip()
    if len(name) > RUN_NAME_MAX:
        errors["name"] = [f"The name is at most {RUN_NAME_MAX} characters."]
    snapshot = dataset_snapshot(user=owner, albums=albums) if albums else []
    if albums and not snapshot:
        errors["album_ids"] = ["The chosen albums have no images to train on."]
    try:
        cleaned = clean_params(params, kind=model.kind if model else ModelKind.SD15, image_count=len(snapshot),
                               native_resolution=model.native_size if model else None,
                               default_sample_prompt=snapshot[0]["caption"] if snapshot else "")
    except RunInputError as exc:
        errors.update(exc.errors)
        cleaned = {}
    if cleaned:
        try:
            training_cost_check(steps=cleaned["steps"], batch_size=cleaned["batch_size"],
                                resolution=cleaned["resolution"])
        except CostTooHigh as exc:
            errors.setdefault(exc.field, []).append(str(exc))
    if errors:
        raise RunInputError(errors)
    epochs = cleaned.pop("epochs", None)
    if enqueue:
        ensure_queue_available()
    with transaction.atomic():
        if enqueue:
            quota_check(user=owner, model=TrainingRun)  # raises QuotaExceeded
        run = TrainingRun.objects.create(
            owner=owner, name=name or _default_name(albums), base_model=model, dataset=snapshot,
            album_names=[a.name for a in albums], total_steps=cleaned["steps"],
            counters={"images": len(snapshot), **({"epochs": epochs} if epochs else {})},
            message="Waiting for a worker…", **cleaned,
        )
        run.albums.set(albums)
        if enqueue:
            enqueue_job(run)
    return run


def run_cancel(*, run: TrainingRun) -> bool:
    """Ask the run to stop; a running one saves a checkpoint first, so it can be resumed."""
    return job_cancel(run)


def latest_checkpoint_step(run: TrainingRun) -> int | None:
    from training.ml.checkpoints import latest_checkpoint  # stdlib-only module

    latest = latest_checkpoint(run.run_dir)
    return int(latest.name.split("-")[-1]) if latest else None


def run_resume(*, run: TrainingRun) -> TrainingRun:
    """Queue a cancelled or failed run again; it continues from its last checkpoint (or starts over).

    The run counts against its owner's limit again, so QuotaExceeded when they already have enough active.
    """
    if run.status not in (JobStatus.CANCELLED, JobStatus.FAILED):
        raise RunStateError(f"Only a cancelled or failed run can be resumed; this one is {run.status}.")
    if LoraModel.objects.filter(training_run=run).exists():
        raise RunStateError("This run already produced its LoRA.")
    ensure_queue_available()
    step = latest_checkpoint_step(run)
    message = f"Queued to resume from step {step}." if step else "Queued to start again (no checkpoint was saved)."
    with transaction.atomic():
        quota_check(user=run.owner, model=TrainingRun)  # raises QuotaExceeded
        updated = TrainingRun.objects.filter(pk=run.pk, status__in=[JobStatus.CANCELLED, JobStatus.FAILED]).update(
            status=JobStatus.QUEUED, cancel_requested=False, cancel_requested_at=None, finished_at=None,
            heartbeat_at=None, error="", message=message, stage=TrainingStage.QUEUED,
        )
        if not updated:
            raise RunStateError("The run changed meanwhile; reload the page.")
        run.refresh_from_db()
        enqueue_job(run, created=False)
    return run


# --- LoRAs ------------------------------------------------------------------------------------------


def lora_name_for(run: TrainingRun) -> str:
    """A unique registry name (also the kohya file's name) derived from the run name."""
    base = slugify(run.name)[:80].strip("-_") or f"lora-{run.pk}"
    if base == "pytorch_lora_weights":
        base = f"{base}-{run.pk}"
    existing = LoraModel.objects.filter(name__startswith=base).exclude(training_run=run)
    taken = set(existing.values_list("name", flat=True))
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def lora_register(*, run: TrainingRun, diffusers_file: Path, kohya_file: Path, name: str | None = None) -> LoraModel:
    """Record a finished run's LoRA (private, default weight 0.6). Registering twice updates the entry."""
    name = name or lora_name_for(run)
    for attempt in range(5):
        try:
            with transaction.atomic():
                lora, _ = LoraModel.objects.update_or_create(
                    training_run=run,
                    defaults={"name": name, "friendly_name": run.name, "owner": run.owner,
                              "base_model": run.base_model, "diffusers_file": str(diffusers_file),
                              "kohya_file": str(kohya_file)},
                )
            return lora
        except IntegrityError:  # someone took the name meanwhile
            name = f"{lora_name_for(run)}-{attempt + 2}"
    raise RunStateError("Could not find a free LoRA name.")


@transaction.atomic
def lora_update(*, lora: LoraModel, friendly_name: str, default_weight: float, trigger_words: str,
                is_public: bool) -> LoraModel:
    lora.friendly_name = friendly_name.strip()[:200] or lora.name
    lora.default_weight = default_weight
    lora.trigger_words = trigger_words.strip()[:300]
    lora.is_public = is_public
    lora.save(update_fields=["friendly_name", "default_weight", "trigger_words", "is_public"])
    return lora


# --- files and clean-up -----------------------------------------------------------------------------


def dataset_root() -> Path:
    root = Path(settings.WORK_DIR) / DATASET_DIR
    root.mkdir(parents=True, exist_ok=True)
    return root


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def training_cleanup(*, now=None, dry_run: bool = False) -> dict[str, int]:
    """Keep the last TRAIN_KEEP_CHECKPOINTS checkpoints of every idle run, delete the files of failed runs
    older than TRAIN_FAILED_RETENTION_DAYS, and remove folders no run owns (orphan run folders and
    temporary datasets a killed worker left behind)."""
    from training.ml.checkpoints import list_checkpoints, remove_temporary

    now = now or timezone.now()
    counts = {"checkpoints_removed": 0, "failed_runs_cleaned": 0, "orphan_run_dirs": 0, "temp_datasets_removed": 0,
              "bytes_freed": 0}
    keep = settings.TRAIN_KEEP_CHECKPOINTS

    def remove(path: Path, counter: str) -> None:
        counts["bytes_freed"] += _size(path)
        counts[counter] += 1
        if not dry_run:
            shutil.rmtree(path, ignore_errors=True)

    runs_root = Path(settings.MODELS_DIR) / "runs"
    active = set(TrainingRun.objects.active().values_list("pk", flat=True))
    known = set(TrainingRun.objects.values_list("pk", flat=True))
    cutoff = now - timedelta(days=settings.TRAIN_FAILED_RETENTION_DAYS)
    expired = set(TrainingRun.objects.filter(status=JobStatus.FAILED, finished_at__lt=cutoff)
                  .values_list("pk", flat=True))
    if runs_root.is_dir():
        for folder in sorted(runs_root.iterdir()):
            if not folder.is_dir():
                continue
            pk = int(folder.name) if folder.name.isdigit() else None
            if pk is None or pk not in known:
                # A folder made a moment ago may belong to a run created after `known` was read.
                if time.time() - folder.stat().st_mtime > 300:
                    remove(folder, "orphan_run_dirs")
            elif pk in expired:
                remove(folder, "failed_runs_cleaned")
            elif pk not in active:
                if not dry_run:
                    remove_temporary(folder)
                for checkpoint in list_checkpoints(folder)[:-keep]:
                    remove(checkpoint, "checkpoints_removed")
    if not dry_run:
        TrainingRun.objects.filter(pk__in=expired).exclude(output_dir="").update(output_dir="")
    removed, freed = remove_orphan_datasets(dry_run=dry_run)
    counts["temp_datasets_removed"] += removed
    counts["bytes_freed"] += freed
    return counts


def remove_orphan_datasets(*, dry_run: bool = False) -> tuple[int, int]:
    """Remove temporary dataset folders no running job owns (a killed worker leaves its folder behind).

    A running job's folder is named run-<id>-…; anything else there, or a folder of a run that is not
    running, is an orphan. Returns (folders removed, bytes freed).
    """
    root = Path(settings.WORK_DIR) / DATASET_DIR
    if not root.is_dir():
        return 0, 0
    running = set(TrainingRun.objects.filter(status=JobStatus.RUNNING).values_list("pk", flat=True))
    removed = freed = 0
    for folder in root.iterdir():
        match = re.match(r"^run-(\d+)-", folder.name)
        try:
            young = time.time() - folder.stat().st_mtime < 60  # just made: its row may not say running yet
        except FileNotFoundError:
            continue
        if match and (int(match.group(1)) in running or young):
            continue
        freed += _size(folder)
        removed += 1
        if not dry_run:
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
            else:
                folder.unlink(missing_ok=True)
    return removed, freed
