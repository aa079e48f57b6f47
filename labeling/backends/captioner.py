"""`captioner`: a small vision-language model loaded through transformers, writing a caption per image.

The folder is a transformers checkpoint of a model class transformers ships (`AutoModelForImageTextToText`
with `AutoProcessor`): BLIP (`Salesforce/blip-image-captioning-base`, the default) or the native
Florence-2 port with the prompt `<MORE_DETAILED_CAPTION>`. Nothing runs remote code. The caption is
checked like any model answer (non-empty, no control characters, at most CAPTION_MAX_LENGTH) before it
is kept; a model that writes nothing usable fails that image with `invalid_answer`.

torch and transformers are imported inside the functions that need them; the loaded model is cached
per process by folder and the config file's modification time.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .base import (
    ERROR_INVALID_ANSWER,
    BackendUnavailable,
    ImageInput,
    LabelError,
    LabelOutcome,
    LabelResult,
)
from .local import label_each
from .schema import AnswerError, validate_entry

_FETCH_HINT = ("run `python manage.py fetch_label_models --captioner` where the Hugging Face hub can be reached, "
               "or copy a transformers checkpoint there by hand (see README, 'Offline labelers')")
_INPUT_SIDE = 1024  # larger pictures are shrunk first: every captioner resizes far below this anyway


@dataclass
class LoadedCaptioner:
    model: object
    processor: object
    device: str
    version: str


_cache: dict[tuple, LoadedCaptioner] = {}
_lock = threading.Lock()


def _device() -> str:
    import torch
    from django.conf import settings

    wanted = getattr(settings, "ML_DEVICE", "auto")
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return wanted


def load_captioner(model_dir: Path) -> LoadedCaptioner:
    config = model_dir / "config.json"
    if not config.is_file():
        raise BackendUnavailable(f"The captioner model is missing: {config} does not exist; {_FETCH_HINT}.")
    key = (str(model_dir.resolve()), config.stat().st_mtime_ns)
    with _lock:
        if key in _cache:
            return _cache[key]
        # transformers (and torch under it) is imported here only: the web process never loads them.
        from transformers import AutoModelForImageTextToText, AutoProcessor

        device = _device()
        try:
            processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
            model = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True)
        except Exception as exc:  # unknown architecture, missing weights or tokenizer files
            raise BackendUnavailable(f"The captioner in {model_dir} cannot be loaded: {exc}") from exc
        model.to(device).eval()
        # The config's digest tells checkpoints apart without hashing gigabytes of weights.
        digest = hashlib.sha256(config.read_bytes()).hexdigest()[:12]
        loaded = LoadedCaptioner(model=model, processor=processor, device=device,
                                 version=f"{model.config.model_type}@{digest}")
        _cache.clear()
        _cache[key] = loaded
        return loaded


def check_caption(text: str) -> str:
    """The caption cleaned and checked by the same rules as every model answer; AnswerError otherwise."""
    fields = validate_entry({"caption": text, "tags": [], "categories": [], "nsfw": False, "nsfw_confidence": 0})
    return fields.caption


class CaptionerBackend:
    name = "captioner"

    def __init__(self, *, model_dir: str | Path | None = None, prompt: str | None = None,
                 max_new_tokens: int | None = None):
        from django.conf import settings

        self.model_dir = Path(model_dir or settings.LABEL_CAPTIONER_DIR)
        self.prompt = settings.LABEL_CAPTIONER_PROMPT if prompt is None else prompt
        self.max_new_tokens = int(max_new_tokens or settings.LABEL_CAPTIONER_MAX_TOKENS)

    @property
    def model_name(self) -> str:
        return f"captioner:{self.model_dir.name}"[:100]

    def check(self) -> None:
        load_captioner(self.model_dir)

    def _caption(self, loaded: LoadedCaptioner, picture) -> str:
        import torch

        kwargs = {"images": picture, "return_tensors": "pt"}
        if self.prompt:
            kwargs["text"] = self.prompt
        inputs = loaded.processor(**kwargs).to(loaded.device)
        with torch.inference_mode():
            output = loaded.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                           num_beams=1)
        # Decoder-only models echo the prompt: keep only what was generated after it.
        if not loaded.model.config.is_encoder_decoder and "input_ids" in inputs:
            prompt_ids = inputs["input_ids"]
            if output.shape[1] > prompt_ids.shape[1] and torch.equal(output[:, :prompt_ids.shape[1]], prompt_ids):
                output = output[:, prompt_ids.shape[1]:]
        text = loaded.processor.batch_decode(output, skip_special_tokens=True)[0]
        if self.prompt and text.startswith(self.prompt):
            text = text[len(self.prompt):]
        return text

    def label_batch(self, images: list[ImageInput], *, should_stop: Callable[[], bool]) -> dict[int, LabelOutcome]:
        if not images:
            return {}
        loaded = load_captioner(self.model_dir)

        def label_one(image, width, height, picture) -> LabelOutcome:
            try:
                text = self._caption(loaded, picture)
            except Exception as exc:
                return LabelError(f"the captioner failed on this image: {exc}")
            try:
                caption = check_caption(text)
            except AnswerError as exc:
                return LabelError(f"invalid answer: {exc}", ERROR_INVALID_ANSWER)
            return LabelResult(caption=caption, tags=[], categories=[], nsfw=None, nsfw_confidence=None,
                               model=self.model_name, version=loaded.version)

        return label_each(images, should_stop, label_one, verb="captioning", max_side=_INPUT_SIDE)
