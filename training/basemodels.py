"""Where a base model's files come from, on whichever machine runs the job.

A base model row is a name plus a source every GPU machine can resolve, never a path of one machine:
- ``stored``: a folder (or one checkpoint file) uploaded once to the artifacts storage under
  ``base-models/<name>/<digest>/`` with a ``manifest.json``; each worker downloads it into its local cache;
- ``folder`` / ``single_file``: a path relative to each machine's MODELS_DIR (the operator puts the same files
  on every GPU machine);
- ``hub``: a hub id, for machines that can reach a hub.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.db import transaction

from imagineer.artifacts import (
    artifact_exists,
    artifact_open,
    artifact_save,
    artifact_upload_tree,
    cached_artifact_tree,
    file_sha256,
)

from .models import BaseModel, ModelKind, SourceType

STORE_PREFIX = "base-models"
MANIFEST = "manifest.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_NAME = re.compile(r"[-a-zA-Z0-9_]{1,100}")


class BaseModelUnavailable(Exception):
    """This machine cannot reach the base model's files; the message says what to do."""


class BaseModelInvalid(ValueError):
    """A registration that cannot work; the message says why."""


def models_dir() -> Path:
    return Path(settings.MODELS_DIR).resolve()


def relative_to_models_dir(path: Path) -> str | None:
    """``path`` relative to MODELS_DIR when it lies inside it (symlinks kept as given), else None."""
    path = Path(path).expanduser().absolute()
    for root in (Path(settings.MODELS_DIR).absolute(), models_dir()):
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            continue
    return None


def in_models_dir(relative: str) -> Path:
    """The local path of a source relative to MODELS_DIR; refuses anything that climbs out of it."""
    if Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise BaseModelUnavailable(f"{relative!r} is not a path relative to MODELS_DIR.")
    return models_dir() / relative


def config_sidecar(path: Path) -> Path | None:
    """The ``<stem>.config`` folder beside a single checkpoint: its own component configs (a diffusers folder
    without weights), for checkpoints whose architecture differs from its family's published configs."""
    sidecar = Path(path).with_name(Path(path).stem + ".config")
    return sidecar if Path(path).is_file() and sidecar.is_dir() else None


def manifest(path: Path) -> tuple[bytes, str]:
    """(manifest.json bytes, its sha256) for a folder or one file (with its config sidecar, if any): every
    file's relative path, size and sha256. The checkpoint itself is the first entry of a single file."""
    path = Path(path)
    sidecar = config_sidecar(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if sidecar is not None:
        files += sorted(p for p in sidecar.rglob("*") if p.is_file())
    root = path if path.is_dir() else path.parent
    entries = []
    for file in files:
        entries.append({"path": file.relative_to(root).as_posix(), "size": file.stat().st_size,
                        "sha256": file_sha256(file)})
    data = json.dumps({"layout": "folder" if path.is_dir() else "single_file", "files": entries},
                      sort_keys=True, indent=1).encode()
    return data, hashlib.sha256(data).hexdigest()


def base_model_upload(*, name: str, path: Path) -> tuple[str, str]:
    """Put a local model folder or checkpoint in the artifacts storage once; returns (key prefix, digest).

    The prefix holds the digest, so the same files give the same prefix (nothing is uploaded again) and other
    files never overwrite what a running job is downloading.
    """
    data, digest = manifest(path)
    prefix = f"{STORE_PREFIX}/{name}/{digest[:16]}"
    if artifact_exists(f"{prefix}/{MANIFEST}"):
        return prefix, digest
    path = Path(path)
    if path.is_dir():
        artifact_upload_tree(path, prefix)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / path.name).symlink_to(path.resolve())
            sidecar = config_sidecar(path)
            if sidecar is not None:  # the checkpoint's own component configs (small files) travel with it
                shutil.copytree(sidecar, Path(tmp) / sidecar.name)
            artifact_upload_tree(Path(tmp), prefix)
    # The manifest goes last: a prefix with a manifest is complete.
    artifact_save(f"{prefix}/{MANIFEST}", data)
    return prefix, digest


def _stored_layout(prefix: str) -> dict:
    try:
        with artifact_open(f"{prefix}/{MANIFEST}") as fh:
            return json.loads(fh.read())
    except FileNotFoundError:
        raise BaseModelUnavailable(f"The stored model {prefix} has no {MANIFEST}: upload it again "
                                   "with `manage.py register_model NAME PATH --upload`.") from None


@contextlib.contextmanager
def local_source(model) -> Iterator[tuple[str, str]]:
    """(local source, source type for the ML library) of a BaseModel row on this machine.

    A stored model comes from this machine's cache (downloaded on first use, kept while the job runs).
    """
    source, source_type = model.source, model.source_type
    if source_type == "stored":
        layout = _stored_layout(source)
        with cached_artifact_tree(source, model.digest) as folder:
            if layout.get("layout") == "single_file":
                yield str(folder / layout["files"][0]["path"]), "single_file"
            else:
                yield str(folder), "folder"
        return
    if source_type in ("folder", "single_file"):
        if Path(source).is_absolute():
            raise BaseModelUnavailable(
                f"It names {source}, a path of one machine. Register it again with "
                f"`manage.py register_model {model.name} <path> --upload` (stored once for every worker) or with a "
                "path under MODELS_DIR.")
        local = in_models_dir(source)
        if not local.exists():
            raise BaseModelUnavailable(
                f"{source} is not in this machine's MODELS_DIR ({models_dir()}). Put the "
                f"same files there on every GPU machine, or upload them once: "
                f"`manage.py register_model {model.name} <path> --upload`."
            )
        yield str(local), source_type
        return
    yield source, source_type


# --- registering ---------------------------------------------------------------------------------------------


def detect_kind(source: str, source_type: str) -> str | None:
    """The family key of a local diffusers folder or single checkpoint (cheap: configs and headers, no weights);
    None when it cannot be read or is no supported family (check_local_files says why)."""
    from training.ml.families import UnsupportedModel, detect_folder, detect_single_file

    try:
        if source_type == SourceType.FOLDER:
            return detect_folder(Path(source)).key
        if source_type == SourceType.SINGLE_FILE:
            return detect_single_file(Path(source)).key
    except (UnsupportedModel, OSError):
        return None
    return None


def detect_native_resolution(source: str, source_type: str) -> int | None:
    """The pixel size a diffusers folder's UNet works at: its latent sample_size times the VAE's scale factor
    (2 per down block after the first), as diffusers' pipelines compute their default size. Cheap: two small
    JSON files. None when the folder does not say (single files and hub ids: the kind's usual size applies)."""
    if source_type != SourceType.FOLDER:
        return None
    try:
        blocks = json.loads((Path(source) / "vae" / "config.json").read_text()).get("block_out_channels")
        if (Path(source) / "transformer").is_dir() and not (Path(source) / "unet").is_dir():
            # Flux-style pipelines have no sample_size: they default to 128 latent pixels per side.
            sample_size = 128
        else:
            sample_size = json.loads((Path(source) / "unet" / "config.json").read_text()).get("sample_size")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(sample_size, list) and sample_size:  # (height, width): square models are what we train
        sample_size = sample_size[0]
    if type(sample_size) is not int or not isinstance(blocks, list) or not blocks:
        return None
    size = sample_size * 2 ** (len(blocks) - 1)
    return size if 16 <= size <= 2048 and size % 8 == 0 else None  # the sizes a run may train at


def check_local_files(path: Path, *, kind: str, source_type: str) -> str:
    """The family key of local files; BaseModelInvalid when they cannot be the model they are registered as
    (another family, a family Imagineer does not support, or a single file it cannot load offline)."""
    from training.ml.families import UnsupportedModel, detect_folder, detect_single_file, get_family

    if kind not in ModelKind.values:
        raise BaseModelInvalid(f"The kind must be one of {', '.join(ModelKind.values)}.")
    try:
        if source_type == SourceType.FOLDER:
            if not path.is_dir():
                raise BaseModelInvalid(f"{path} is not a folder.")
            if not (path / "model_index.json").is_file():
                raise BaseModelInvalid(f"{path} is not a diffusers model folder (it has no model_index.json).")
            family = detect_folder(path)
        elif source_type == SourceType.SINGLE_FILE:
            if not path.is_file():
                raise BaseModelInvalid(f"{path} is not a file.")
            if path.suffix.lower() == ".ckpt":
                raise BaseModelInvalid(f"{path.name} is a .ckpt: a pickle, which can run code when it is loaded. "
                                       "Convert it to .safetensors first.")
            if path.suffix.lower() != ".safetensors":
                raise BaseModelInvalid(f"{path.name} is not a .safetensors checkpoint.")
            family = detect_single_file(path)
            if not family.single_file_config and config_sidecar(path) is None:
                raise BaseModelInvalid(f"{path.name} is a {family.label} checkpoint. {family.notes}")
        else:
            return kind
    except UnsupportedModel as exc:
        raise BaseModelInvalid(str(exc)) from exc
    if family.key != kind:
        raise BaseModelInvalid(f"{path.name} is a {family.label} model ({family.key}), not {get_family(kind).label} "
                               f"({kind}).")
    return family.key


def check_base_model_source(*, source: str, kind: str, source_type: str) -> list[str]:
    """Check what can be checked from this machine; raise BaseModelInvalid for a source that cannot work.

    Returns notes on what could not be checked here (a path under MODELS_DIR that this machine, perhaps the web
    server, does not hold: every GPU machine needs it).
    """
    if kind not in ModelKind.values:
        raise BaseModelInvalid(f"The kind must be one of {', '.join(ModelKind.values)}.")
    if source_type == SourceType.STORED:
        if not artifact_exists(f"{source}/{MANIFEST}"):
            raise BaseModelInvalid(f"Nothing is stored under {source!r}; upload a model with "
                                   "`manage.py register_model NAME PATH --upload`.")
        return []
    if source_type in (SourceType.FOLDER, SourceType.SINGLE_FILE):
        if Path(source).is_absolute() or ".." in Path(source).parts:
            raise BaseModelInvalid(
                f"{source} is not a path relative to MODELS_DIR: a row names no path of one machine. Give the path "
                "under MODELS_DIR (the same on every GPU machine), or upload the files once with "
                "`manage.py register_model NAME PATH --upload`.")
        local = in_models_dir(source)
        if not local.exists():
            return [f"{source} is not in this machine's MODELS_DIR ({models_dir()}), so it was not checked here; "
                    "every GPU machine needs it there."]
        check_local_files(local, kind=kind, source_type=source_type)
        return []
    if source_type == SourceType.HUB:
        if not _HUB_ID.match(source):
            raise BaseModelInvalid(f"{source!r} is not a hub id like 'owner/model'.")
        return ["Hub models are loaded by each GPU machine from its hub cache or the hub; not checked here."]
    raise BaseModelInvalid(f"The source type must be one of {', '.join(SourceType.values)}.")


def base_model_register(*, name: str, source: str, kind: str | None = None, source_type: str | None = None,
                        upload: bool = False, make_default: bool = False, description: str = "") -> BaseModel:
    """Register (or re-point) a base model by name so that every GPU machine can load it.

    ``source`` is a local folder or checkpoint (uploaded to storage with ``upload``, else it must lie under
    MODELS_DIR and is recorded relative to it), a stored prefix (source_type "stored"), a path relative to
    MODELS_DIR, or a hub id. The kind of a diffusers folder is read from it. The row's ``registration_notes``
    list what could not be checked from this machine.
    """
    from training.ml.pipelines import detect_source_type  # cheap module: no heavy imports at its top

    if not _NAME.fullmatch(name or ""):
        raise BaseModelInvalid("The name must be 1–100 letters, digits, '-' or '_'.")
    local = Path(source).expanduser()  # a path typed by hand (relative to here), or one under MODELS_DIR
    if source_type != SourceType.STORED and not local.exists() and not local.is_absolute() and (
            ".." not in local.parts and (models_dir() / local).exists()):
        local = models_dir() / local
    local = local.absolute() if local.exists() and source_type != SourceType.STORED else local
    native = digest = None
    if source_type != SourceType.STORED and local.exists():
        local_type = source_type if source_type in (SourceType.FOLDER, SourceType.SINGLE_FILE) else (
            detect_source_type(str(local)))
        # The files say which family they are; when they are none we support, the check explains why.
        kind = kind or detect_kind(str(local), local_type) or ModelKind.SD15
        check_local_files(local, kind=kind, source_type=local_type)
        native = detect_native_resolution(str(local), local_type)
        if upload:
            source, digest = base_model_upload(name=name, path=local)
            source_type = SourceType.STORED
        else:
            relative = relative_to_models_dir(local)
            if relative is None:
                raise BaseModelInvalid(
                    f"{local} is outside MODELS_DIR ({models_dir()}). Upload it once for every worker with --upload "
                    "(the admin: register it with manage.py), or put the same files under MODELS_DIR on every GPU "
                    "machine and register that path.")
            source, source_type = relative, local_type
    elif upload:
        raise BaseModelInvalid(f"{source} is not a file or folder on this machine, so it cannot be uploaded.")
    else:
        source_type = source_type or (SourceType.HUB if _HUB_ID.match(source) else SourceType.FOLDER)
        kind = kind or ModelKind.SD15
    notes = check_base_model_source(source=source, kind=kind, source_type=source_type)
    if source_type == SourceType.STORED and digest is None:
        digest = json_digest(source)
    with transaction.atomic():
        model, _ = BaseModel.objects.update_or_create(
            name=name, defaults={"source": source, "kind": kind, "source_type": source_type, "digest": digest or "",
                                 "description": description, "native_resolution": native})
        if make_default:
            base_model_set_default(model=model)
    model.registration_notes = notes
    return model


def json_digest(prefix: str) -> str:
    """The digest of a stored model: the sha256 of its manifest."""
    with artifact_open(f"{prefix}/{MANIFEST}") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


@transaction.atomic
def base_model_set_default(*, model: BaseModel) -> None:
    BaseModel.objects.filter(is_default=True).exclude(pk=model.pk).update(is_default=False)
    BaseModel.objects.filter(pk=model.pk).update(is_default=True)
    model.is_default = True
