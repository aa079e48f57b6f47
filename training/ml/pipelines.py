"""Loading diffusion pipelines, keeping them warm between jobs, and switching LoRAs on them.

A worker process keeps one PipelineCache (see ``pipeline_cache()``); a generation job asks it for the base
model, then calls ``apply_loras`` with the job's LoRA set. Loading a base model takes seconds to minutes,
switching adapters on a loaded one takes milliseconds, which is why the cache exists.
"""

from __future__ import annotations

import gc
import hashlib
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import ModelNotFound, WrongModelKind
from .families import detect_folder, detect_single_file

ModelKind = str  # a family key: sd15, sd2, sdxl, flux (training/ml/families)
SourceType = Literal["folder", "single_file", "hub"]
DevicePreference = Literal["auto", "cpu", "cuda", "mps"]


def _kinds() -> dict[str, str]:
    from .families import families

    return {family.key: family.pipeline_class for family in families()}


SINGLE_FILE_SUFFIXES = (".safetensors",)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# --- device and dtype ---------------------------------------------------------------------------------


def device_preference() -> str:
    """settings.ML_DEVICE when Django is configured, else "auto" (scripts, benchmarks, bare tests)."""
    try:
        from django.conf import settings

        return str(getattr(settings, "ML_DEVICE", "auto"))
    except Exception:  # ImproperlyConfigured or Django absent: the library also runs outside the web app.
        return "auto"


def resolve_device(preference: str | None = None) -> str:
    """Turn auto|cpu|cuda|mps into the device to use, failing clearly when the asked-for one is absent."""
    # torch is needed to ask which accelerators exist.
    import torch

    pref = (preference or device_preference()).lower()
    if pref not in ("auto", "cpu", "cuda", "mps"):
        raise ValueError(f"ML device must be one of auto, cpu, cuda, mps; got {pref!r}")
    has_mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if pref == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if pref == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("ML_DEVICE is 'cuda' but torch sees no CUDA GPU; set IMAGINEER_DEVICE=auto or cpu.")
    if pref == "mps" and not has_mps:
        raise RuntimeError("ML_DEVICE is 'mps' but the Apple MPS backend is not available; use auto or cpu.")
    return pref


def inference_dtype(device: str) -> Any:
    """Half precision on accelerators (bf16 where supported, it does not overflow), full precision on CPU."""
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def free_accelerator_memory() -> None:
    """Return cached allocator blocks to the driver after dropping a model."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        torch.mps.empty_cache()


# --- loading ------------------------------------------------------------------------------------------


def detect_source_type(source: str) -> SourceType:
    """A folder, a single checkpoint file, or otherwise a Hugging Face hub id."""
    path = Path(source).expanduser()
    if path.is_dir():
        return "folder"
    if path.suffix.lower() in SINGLE_FILE_SUFFIXES or path.exists() or source.startswith(("/", ".", "~")):
        return "single_file"
    return "hub"


def load_pipeline(
    source: str,
    *,
    kind: ModelKind,
    source_type: SourceType | None = None,
    device: str | None = None,
    dtype: Any = None,
    config: str | None = None,
) -> Any:
    """Load a pipeline of a supported family and move it to the device; raise ModelNotFound / WrongModelKind.

    folder: a diffusers save_pretrained folder. single_file: an A1111-style .safetensors checkpoint, loaded
    offline with the family's component configs: ``config`` (a local diffusers folder of the same architecture,
    weights not needed), else a ``<checkpoint stem>.config`` folder beside the file, else the configs Imagineer
    ships for the family. hub: a repo id, loaded through the local Hugging Face cache or the hub.
    """
    if kind not in _kinds():
        raise ValueError(f"Model kind must be one of {', '.join(_kinds())}; got {kind!r}")
    source_type = source_type or detect_source_type(source)
    device = device or resolve_device()
    dtype = dtype if dtype is not None else inference_dtype(device)
    if source_type == "folder":
        pipe = _load_folder(Path(source).expanduser(), kind, dtype)
    elif source_type == "single_file":
        pipe = _load_single_file(Path(source).expanduser(), kind, dtype, config)
    elif source_type == "hub":
        pipe = _load_hub(source, kind, dtype)
    else:
        raise ValueError(f"source_type must be folder, single_file or hub; got {source_type!r}")
    _use_sdpa(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _pipeline_class(kind: ModelKind) -> Any:
    # diffusers is heavy; only the worker that actually loads models imports it.
    import diffusers

    return getattr(diffusers, _kinds()[kind])


def _load_folder(path: Path, kind: ModelKind, dtype: Any) -> Any:
    index = path / "model_index.json"
    if not path.is_dir():
        raise ModelNotFound(f"Base model folder {path} does not exist.")
    if not index.is_file():
        raise ModelNotFound(f"{path} is not a diffusers model folder: it has no model_index.json.")
    _check_family(_detect(lambda: detect_folder(path)), kind, str(path))
    return _pipeline_class(kind).from_pretrained(str(path), dtype=dtype, **_no_safety_checker(kind))


def _load_single_file(path: Path, kind: ModelKind, dtype: Any, config: str | None) -> Any:
    from .families import get_family

    if not path.is_file():
        raise ModelNotFound(f"Model file {path} does not exist.")
    if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
        raise ModelNotFound(f"{path.name} is not a .safetensors checkpoint (a .ckpt is a pickle that can run code when "
                            "loaded: convert it to .safetensors first).")
    _check_family(_detect(lambda: detect_single_file(path)), kind, str(path))
    config_dir = config or single_file_config(path, get_family(kind))
    if kind == "flux":
        return _load_flux_single_file(path, Path(config_dir), dtype)
    # local_files_only: every config comes from disk, so a machine without a hub never waits on one. No
    # load_safety_checker argument: diffusers treats any value of it, even False, as "load the checker".
    kwargs: dict[str, Any] = {"dtype": dtype, "config": str(config_dir), "local_files_only": True,
                              **_no_safety_checker(kind)}
    try:
        return _pipeline_class(kind).from_single_file(str(path), **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelNotFound(
            f"Could not load {path.name} as a {get_family(kind).label} checkpoint with the configs in {config_dir}: "
            f"{exc}") from exc


def _load_flux_single_file(path: Path, config_dir: Path, dtype: Any) -> Any:
    """A BFL-layout Flux transformer file plus the rest of the pipeline (VAE, CLIP-L, T5, scheduler) from the
    config folder: a Flux diffusers folder whose transformer folder holds only its config."""
    from .families.flux_layout import load_transformer

    try:
        transformer = load_transformer(path, config_dir, dtype)
        return _pipeline_class("flux").from_pretrained(str(config_dir), transformer=transformer, dtype=dtype,
                                                       local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelNotFound(f"Could not load {path.name} as a Flux.1 transformer with the rest of the pipeline in "
                            f"{config_dir}: {exc}") from exc


def single_file_config(path: Path, family: Any) -> Path:
    """The component configs for a single checkpoint: a ``<stem>.config`` folder beside it, else the family's."""
    from .families.configs import config_folder

    sidecar = path.with_name(path.stem + ".config")
    if sidecar.is_dir():
        return sidecar
    if not family.single_file_config:
        raise ModelNotFound(f"{path.name}: {family.notes or f'{family.label} single files are not supported.'}")
    return config_folder(family.single_file_config)


def _detect(detector: Callable[[], Any]) -> Any:
    from .families import UnsupportedModel

    try:
        return detector()
    except UnsupportedModel as exc:
        raise WrongModelKind(str(exc)) from exc


def _load_hub(repo_id: str, kind: ModelKind, dtype: Any) -> Any:
    if not _HUB_ID.match(repo_id):
        raise ModelNotFound(f"{repo_id!r} is neither an existing path nor a hub id like 'owner/model'.")
    try:
        return _pipeline_class(kind).from_pretrained(repo_id, dtype=dtype, **_no_safety_checker(kind))
    except OSError as exc:
        raise ModelNotFound(f"Hub model {repo_id} could not be loaded (not cached locally or no access): {exc}")


def _no_safety_checker(kind: ModelKind) -> dict[str, Any]:
    # Moderation is the product's job (labels, visibility), not a classifier that blanks images. Only the
    # StableDiffusionPipeline (SD1.x, SD2.x) has a checker slot.
    return {"safety_checker": None} if _kinds().get(kind) == "StableDiffusionPipeline" else {}


def sniff_single_file_kind(path: Path) -> ModelKind:
    """The family key of a .safetensors checkpoint, from the tensor names in its header (no weights read);
    raises families.UnsupportedModel naming what the file is when it is no supported family."""
    return detect_single_file(Path(path)).key


def _check_family(found: Any, kind: ModelKind, where: str) -> None:
    if found.key != kind:
        raise WrongModelKind(f"{where} is a {found.label} model ({found.key}) but kind={kind!r} was given.")


def _use_sdpa(pipe: Any) -> None:
    # Fused scaled-dot-product attention: the fastest and leanest attention torch offers on every device.
    from diffusers.models.attention_processor import AttnProcessor2_0

    for name in ("unet", "vae"):
        module = getattr(pipe, name, None)
        if module is not None and hasattr(module, "set_attn_processor"):
            module.set_attn_processor(AttnProcessor2_0())


# --- LoRAs --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA to apply: a display name, a .safetensors path (diffusers or kohya format) and its weight."""

    name: str
    path: str | Path
    weight: float = 1.0


# Adapters loaded into each pipeline, least recently used first; weak keys so dropped pipelines go away.
_ADAPTERS: weakref.WeakKeyDictionary[Any, OrderedDict[str, None]] = weakref.WeakKeyDictionary()
MAX_ADAPTERS_PER_PIPELINE = 16


def adapter_name(spec: LoraSpec) -> str:
    """A peft-safe adapter name that changes when the file changes, so a retrained LoRA is reloaded."""
    path = Path(spec.path)
    if not path.is_file():
        raise ModelNotFound(f"LoRA file {path} for {spec.name!r} does not exist.")
    stat = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    stem = re.sub(r"\W", "_", spec.name)[:40] or "lora"
    return f"{stem}_{digest}"


def apply_loras(pipe: Any, loras: Sequence[LoraSpec]) -> list[str]:
    """Activate exactly these LoRAs with their weights; load each file once per pipeline; return adapter names.

    An empty list disables LoRA, leaving the base model's own behaviour. Adapters not used for a while
    are deleted once a pipeline holds more than MAX_ADAPTERS_PER_PIPELINE.
    """
    loaded = _ADAPTERS.setdefault(pipe, OrderedDict())
    if not loras:
        if loaded or any(pipe.get_list_adapters().values()):
            pipe.disable_lora()
        return []
    names = [adapter_name(spec) for spec in loras]
    if len(set(names)) != len(names):
        raise ValueError("The same LoRA file is listed twice; give it once with the combined weight.")
    for spec, name in zip(loras, names, strict=True):
        if name not in loaded:
            pipe.load_lora_weights(str(spec.path), adapter_name=name)
        loaded[name] = None
        loaded.move_to_end(name)
    _forget_old_adapters(pipe, loaded, keep=set(names))
    pipe.enable_lora()
    pipe.set_adapters(names, adapter_weights=[float(spec.weight) for spec in loras])
    return names


def _forget_old_adapters(pipe: Any, loaded: OrderedDict[str, None], keep: set[str]) -> None:
    stale = [name for name in loaded if name not in keep][: max(0, len(loaded) - MAX_ADAPTERS_PER_PIPELINE)]
    if stale:
        pipe.delete_adapters(stale)
        for name in stale:
            del loaded[name]


# --- the warm cache -----------------------------------------------------------------------------------


@dataclass
class _Entry:
    pipe: Any
    source: str
    kind: str


class PipelineCache:
    """Keeps up to max_entries loaded pipelines, keyed by base model, evicting the least recently used.

    ``load_counts[key]`` says how many times a key was actually loaded (not served warm), which tests and
    benchmarks use to check that a worker loads each base model once.
    """

    def __init__(self, max_entries: int = 1, loader: Callable[..., Any] = load_pipeline) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._loader = loader
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.load_counts: dict[str, int] = {}
        # One lock for lookups and loads: two threads asking for the same model must not load it twice.
        self._lock = threading.RLock()

    def get(
        self,
        source: str,
        *,
        kind: ModelKind,
        source_type: SourceType | None = None,
        key: str | None = None,
        **load_kwargs: Any,
    ) -> Any:
        """Return the warm pipeline for key (default: kind + source), loading and evicting as needed."""
        key = key or f"{kind}:{source}"
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                return entry.pipe
            while len(self._entries) >= self.max_entries:
                self._evict_oldest()
            pipe = self._loader(source, kind=kind, source_type=source_type, **load_kwargs)
            self._entries[key] = _Entry(pipe=pipe, source=source, kind=kind)
            self.load_counts[key] = self.load_counts.get(key, 0) + 1
            return pipe

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def evict(self, key: str) -> bool:
        """Drop one pipeline (e.g. its base model was deleted or replaced); True if it was loaded."""
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is None:
            return False
        del entry
        free_accelerator_memory()
        return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
        free_accelerator_memory()

    def _evict_oldest(self) -> None:
        _, entry = self._entries.popitem(last=False)
        del entry
        free_accelerator_memory()


_cache: PipelineCache | None = None
_cache_lock = threading.Lock()


def pipeline_cache() -> PipelineCache:
    """The process-wide cache a warm worker shares between jobs (size: settings.ML_PIPELINE_CACHE_SIZE, 1)."""
    global _cache
    with _cache_lock:
        if _cache is None:
            _cache = PipelineCache(max_entries=_cache_size_setting())
        return _cache


def _cache_size_setting() -> int:
    try:
        from django.conf import settings

        return max(1, int(getattr(settings, "ML_PIPELINE_CACHE_SIZE", 1)))
    except Exception:  # Django not configured: a script or benchmark, one warm model is enough.
        return 1
