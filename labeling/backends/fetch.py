"""Download the offline labelers' default models from the Hugging Face hub into their folders.

A download goes into a temporary folder beside the target and replaces the target only once it is
complete and usable, so a failed or interrupted fetch never leaves a half-filled model folder.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .base import BackendUnavailable


class FetchFailed(Exception):
    """The model could not be downloaded; the message says why and where to put the files by hand."""


@dataclass(frozen=True)
class LabelModelSpec:
    kind: str
    repo: str
    folder: Path
    patterns: tuple[str, ...]
    required: tuple[str, ...]


def default_specs() -> dict[str, LabelModelSpec]:
    from django.conf import settings

    return {
        "tagger": LabelModelSpec("tagger", settings.LABEL_TAGGER_REPO, Path(settings.LABEL_TAGGER_DIR),
                                 ("model.onnx", "selected_tags.csv"), ("model.onnx", "selected_tags.csv")),
        "captioner": LabelModelSpec("captioner", settings.LABEL_CAPTIONER_REPO, Path(settings.LABEL_CAPTIONER_DIR),
                                    ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"),
                                    ("config.json",)),
    }


def _verify(spec: LabelModelSpec, folder: Path) -> None:
    if spec.kind == "tagger":
        from .tagger import load_tagger

        load_tagger(folder)
    else:
        from .captioner import load_captioner

        load_captioner(folder)


def fetch(spec: LabelModelSpec, *, endpoint: str | None = None, force: bool = False,
          verify: bool = True) -> str:
    """Download `spec.repo` into `spec.folder`; returns what happened in words. Raises FetchFailed."""
    if not force and all((spec.folder / name).is_file() for name in spec.required):
        return f"{spec.kind}: {spec.folder} already holds a model (use --force to download again)"
    # huggingface_hub is imported here only: only this command talks to the hub.
    from huggingface_hub import snapshot_download

    spec.folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.folder.name}-", dir=spec.folder.parent))
    try:
        try:
            snapshot_download(spec.repo, local_dir=staging, allow_patterns=list(spec.patterns), endpoint=endpoint,
                              etag_timeout=10)
        except Exception as exc:  # connection refused, DNS, HTTP 404/401, the hub's own errors
            raise FetchFailed(
                f"Could not download {spec.kind} model {spec.repo} from the Hugging Face hub "
                f"({endpoint or 'huggingface.co'}): {type(exc).__name__}: {exc}. Without the hub, copy the files "
                f"into {spec.folder} by hand (README, 'Offline labelers')."
            ) from exc
        missing = [name for name in spec.required if not (staging / name).is_file()]
        if missing:
            raise FetchFailed(f"{spec.repo} has no {', '.join(missing)}: it is not a {spec.kind} model.")
        shutil.rmtree(staging / ".cache", ignore_errors=True)
        if verify:
            try:
                _verify(spec, staging)
            except BackendUnavailable as exc:
                raise FetchFailed(f"{spec.repo} was downloaded but cannot be used: {exc}") from exc
        if spec.folder.exists():
            shutil.rmtree(spec.folder)
        staging.rename(spec.folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return f"{spec.kind}: {spec.repo} -> {spec.folder}"
