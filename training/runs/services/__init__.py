"""Writes for training: base models, runs (create, cancel, resume), the LoRA registry, and clean-up."""

from __future__ import annotations

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
from imagineer.artifacts import artifact_delete_prefix
from imagineer.jobs import enqueue_job, ensure_queue_available, job_cancel
from imagineer.models import JobStatus
from imagineer.quotas import CostTooHigh, quota_check, training_cost_check
from labeling.selectors import album_training_captions

from ...models import BaseModel, LoraModel, ModelKind, TrainingRun, TrainingStage
from ..artifacts import checkpoint_prefix, stored_checkpoints
from ..params import OPTION_NAMES, RunInputError, clean_params

RUN_NAME_MAX = 100
DATASET_DIR = "training"  # under WORK_DIR: the temporary dataset folders of running jobs


class RunStateError(ValueError):
    """The run is not in a state that allows this (e.g. resuming a run that is still running)."""


# --- runs -------------------------------------------------------------------------------------------


def dataset_snapshot(*, user, albums: Sequence[Album]) -> list[dict[str, Any]]:
    """The frozen dataset: every image of the albums that the user may see, with the caption used.

    An image in several albums appears once, captioned with the first album's name as the fallback.
    """
    from gallery.provenance import provenance_map

    entries: list[dict[str, Any]] = []
    seen: set[int] = set()
    for album in albums:
        images = [img for img in album.images_visible_to(user) if img.pk not in seen]
        # The album's trigger word and caption template apply (labeling's caption tools).
        captions = album_training_captions(album, [img.pk for img in images])
        provenance = provenance_map(images)  # frozen with the rest: source, opt-out status, licence
        for img in images:
            seen.add(img.pk)
            entries.append({"image_id": img.pk, "sha256": img.sha256, "caption": captions[img.pk],
                            "file": img.file.name, "album_id": album.pk, "provenance": provenance[img.pk]})
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


# The families the trainer handles (training/ml/train.py); kept here so the web process need not import it.
TRAINABLE_KINDS = ("sd15", "sd2", "sdxl", "flux")


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
    if model is not None and model.kind not in TRAINABLE_KINDS:
        errors.setdefault("base_model", []).append(
            f"{model.name} is a {model.get_kind_display()} model: LoRA training for it is not available yet "
            "(it can generate). Choose an SD1.5, SD2.x or SDXL base model.")
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
    options = {key: cleaned.pop(key) for key in OPTION_NAMES if key in cleaned}
    if enqueue:
        ensure_queue_available()
    with transaction.atomic():
        if enqueue:
            quota_check(user=owner, model=TrainingRun)  # raises QuotaExceeded
        run = TrainingRun.objects.create(
            owner=owner, name=name or _default_name(albums), base_model=model, dataset=snapshot,
            album_names=[a.name for a in albums], total_steps=cleaned["steps"],
            counters={"images": len(snapshot), **({"epochs": epochs} if epochs else {})},
            message="Waiting for a worker…", options=options, **cleaned,
        )
        run.albums.set(albums)
        if enqueue:
            enqueue_job(run)
    return run


def run_cancel(*, run: TrainingRun) -> bool:
    """Ask the run to stop; a running one saves a checkpoint first, so it can be resumed."""
    return job_cancel(run)


def latest_checkpoint_step(run: TrainingRun) -> int | None:
    """The step of the run's newest complete checkpoint in storage, whichever machine wrote it."""
    steps = stored_checkpoints(run)
    return steps[-1] if steps else None


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


def lora_register(*, run: TrainingRun, diffusers_file: str, kohya_file: str, diffusers_sha256: str = "",
                  kohya_sha256: str = "", name: str | None = None) -> LoraModel:
    """Record a finished run's LoRA (private, default weight 0.6) by its storage keys. Registering twice updates
    the entry."""
    name = name or lora_name_for(run)
    for attempt in range(5):
        try:
            with transaction.atomic():
                lora, _ = LoraModel.objects.update_or_create(
                    training_run=run,
                    defaults={"name": name, "friendly_name": run.name, "owner": run.owner,
                              "base_model": run.base_model, "diffusers_file": diffusers_file,
                              "diffusers_sha256": diffusers_sha256, "kohya_file": kohya_file,
                              "kohya_sha256": kohya_sha256},
                )
            return lora
        except IntegrityError:  # someone took the name meanwhile
            name = f"{lora_name_for(run)}-{attempt + 2}"
    raise RunStateError("Could not find a free LoRA name.")


def lora_from_checkpoint(*, run: TrainingRun, step: int) -> LoraModel:
    """Register the LoRA of one of the run's kept checkpoints (both file formats), as kohya users pick the best
    step by hand. Its files are copied out of the checkpoint, so pruning checkpoints later keeps them. Registering
    the same step again returns the existing entry. RunStateError when that checkpoint is not stored."""
    import hashlib

    from imagineer.artifacts import artifact_exists, artifact_open, artifact_save
    from training.ml.trainer import CHECKPOINT_KOHYA, DIFFUSERS_WEIGHTS  # plain names; no heavy imports there

    from ..provenance import sources_metadata, stamp_safetensors_bytes

    existing = LoraModel.objects.filter(checkpoint_of=run, checkpoint_step=step).first()
    if existing is not None:
        return existing
    if step not in stored_checkpoints(run):
        raise RunStateError(f"No kept checkpoint at step {step}: the run keeps {_steps_text(run)}.")
    source = checkpoint_prefix(run, step)
    target = f"{run.artifact_prefix}/lora/step-{step:06d}"
    copies: dict[str, tuple[str, str]] = {}
    base = f"{slugify(run.name)[:70].strip('-_') or f'lora-{run.pk}'}-step-{step}"
    for kind, name, stored_as in (("diffusers", DIFFUSERS_WEIGHTS, DIFFUSERS_WEIGHTS),
                                  ("kohya", CHECKPOINT_KOHYA, f"{base}.safetensors")):
        key = f"{source}/{name}"
        if not artifact_exists(key):
            if kind == "kohya":  # checkpoints written before kohya files were kept in them
                copies[kind] = ("", "")
                continue
            raise RunStateError(f"The checkpoint at step {step} has no LoRA file.")
        with artifact_open(key) as handle:
            data = handle.read()
        # The same summary of its sources as the run's final LoRA carries (checkpoints are written without it).
        data = stamp_safetensors_bytes(data, sources_metadata(run.dataset or []))
        copies[kind] = (artifact_save(f"{target}/{stored_as}", data), hashlib.sha256(data).hexdigest())
    name = base
    for attempt in range(2, 50):
        try:
            with transaction.atomic():
                return LoraModel.objects.create(
                    name=name, friendly_name=f"{run.name} (step {step})", owner=run.owner,
                    base_model=run.base_model, diffusers_file=copies["diffusers"][0],
                    diffusers_sha256=copies["diffusers"][1], kohya_file=copies["kohya"][0],
                    kohya_sha256=copies["kohya"][1], checkpoint_of=run, checkpoint_step=step,
                    trigger_words=str((run.options or {}).get("trigger_word") or ""))
        except IntegrityError:  # the name is taken
            name = f"{base}-{attempt}"
    raise RunStateError("Could not find a free LoRA name.")


def _steps_text(run: TrainingRun) -> str:
    steps = stored_checkpoints(run)
    return "steps " + ", ".join(map(str, steps)) if steps else "no checkpoints"


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
    """Keep the last TRAIN_KEEP_CHECKPOINTS stored checkpoints of every idle run, delete the stored files of failed
    runs older than TRAIN_FAILED_RETENTION_DAYS, remove stored run and grid folders no row owns, and on this machine the
    scratch folders and temporary datasets no running job owns (a killed worker leaves them behind)."""
    from imagineer.artifacts import artifact_list, artifact_storage

    now = now or timezone.now()
    counts = {"checkpoints_removed": 0, "failed_runs_cleaned": 0, "orphan_run_dirs": 0, "orphan_grid_dirs": 0,
              "temp_datasets_removed": 0, "bytes_freed": 0}
    keep = settings.TRAIN_KEEP_CHECKPOINTS
    storage = artifact_storage()

    def stored_size(prefix: str) -> int:
        return sum(storage.size(key) for key in artifact_list(prefix))

    def remove_stored(prefix: str, counter: str) -> None:
        counts["bytes_freed"] += stored_size(prefix)
        counts[counter] += 1
        if not dry_run:
            artifact_delete_prefix(prefix)

    active = set(TrainingRun.objects.active().values_list("pk", flat=True))
    known = set(TrainingRun.objects.values_list("pk", flat=True))
    cutoff = now - timedelta(days=settings.TRAIN_FAILED_RETENTION_DAYS)
    expired = set(TrainingRun.objects.filter(status=JobStatus.FAILED, finished_at__lt=cutoff)
                  .values_list("pk", flat=True))
    try:
        stored_runs, _ = storage.listdir("runs")
    except FileNotFoundError:
        stored_runs = []
    for name in sorted(stored_runs):
        pk = int(name) if name.isdigit() else None
        prefix = f"runs/{name}"
        if pk is None or pk not in known:
            keys = artifact_list(prefix)
            # A run created after `known` was read may be uploading already: leave young folders alone.
            if keys and (now - max(storage.get_modified_time(k) for k in keys)).total_seconds() > 300:
                remove_stored(prefix, "orphan_run_dirs")
        elif pk in expired:
            remove_stored(prefix, "failed_runs_cleaned")
        elif pk not in active:
            run = TrainingRun(pk=pk)
            for step in stored_checkpoints(run)[:-keep]:
                remove_stored(checkpoint_prefix(run, step), "checkpoints_removed")
    # Evaluation grids' images whose grid is gone (deleted in the admin, or with its run or owner).
    from ...models import EvaluationGrid

    known_grids = set(EvaluationGrid.objects.values_list("pk", flat=True))
    try:
        stored_grids, _ = storage.listdir("grids")
    except FileNotFoundError:
        stored_grids = []
    for name in sorted(stored_grids):
        if name.isdigit() and int(name) in known_grids:
            continue
        keys = artifact_list(f"grids/{name}")
        if keys and (now - max(storage.get_modified_time(k) for k in keys)).total_seconds() > 300:
            remove_stored(f"grids/{name}", "orphan_grid_dirs")
    # This machine's scratch folders of runs it is not running now (everything in them is in storage).
    scratch = Path(settings.WORK_DIR) / "runs"
    running_here = set(TrainingRun.objects.filter(status=JobStatus.RUNNING).values_list("pk", flat=True))
    if scratch.is_dir():
        for folder in scratch.iterdir():
            pk = int(folder.name) if folder.name.isdigit() else None
            if pk in running_here or time.time() - folder.stat().st_mtime < 300:
                continue
            counts["bytes_freed"] += _size(folder)
            counts["orphan_run_dirs"] += 1
            if not dry_run:
                shutil.rmtree(folder, ignore_errors=True)
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
