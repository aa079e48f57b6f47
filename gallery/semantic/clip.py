"""CLIP through transformers, loaded from `GALLERY_CLIP_MODEL` (a folder saved with save_pretrained).

torch and transformers are imported inside the functions (the web process imports this module without them;
the first semantic query or embedding job loads the model once per process). Vectors come back L2-normalised,
float32, so cosine similarity is a dot product.
"""

from __future__ import annotations

import io
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

_lock = threading.Lock()


class ClipUnavailable(RuntimeError):
    """No CLIP model is configured or it cannot be loaded; semantic search is off."""


def model_path() -> Path:
    from django.conf import settings

    raw = getattr(settings, "GALLERY_CLIP_MODEL", "") or ""
    if not raw:
        raise ClipUnavailable("No CLIP model is configured (IMAGINEER_CLIP_MODEL).")
    path = Path(raw)
    if not (path / "config.json").exists():
        raise ClipUnavailable(f"The CLIP model folder {path} has no config.json.")
    return path


def model_tag() -> str:
    """Which model made a vector: vectors of different models are never compared."""
    path = model_path()
    return f"{path.name}:{int((path / 'config.json').stat().st_mtime)}"[:100]


@lru_cache(maxsize=2)
def _load(path: str, tag: str):
    # Heavy imports stay inside: see the module docstring.
    import torch
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    # One thread: a text query is a few milliseconds, and web threads running torch in parallel only fight.
    torch.set_num_threads(1)
    model = CLIPModel.from_pretrained(path).eval()
    return model, CLIPTokenizer.from_pretrained(path), CLIPImageProcessor.from_pretrained(path)


def _loaded():
    path = model_path()
    with _lock:
        return _load(str(path), model_tag())


def _normalise(features) -> np.ndarray:
    vectors = features.detach().float().cpu().numpy().astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _features(output):
    # transformers 5 may return a model output object rather than a bare tensor.
    return output if hasattr(output, "detach") else output.pooler_output


def embed_images(datas: list[bytes]) -> np.ndarray:
    """One vector per image (bytes of an image already validated by the gallery)."""
    import torch
    from PIL import Image as PILImage

    model, _, processor = _loaded()
    pictures = [PILImage.open(io.BytesIO(data)).convert("RGB") for data in datas]
    inputs = processor(images=pictures, return_tensors="pt")
    with torch.inference_mode():
        return _normalise(_features(model.get_image_features(pixel_values=inputs["pixel_values"])))


def embed_text(text: str) -> np.ndarray:
    import torch

    model, tokenizer, _ = _loaded()
    inputs = tokenizer([text], padding=True, truncation=True, return_tensors="pt",
                       max_length=model.config.text_config.max_position_embeddings)
    with torch.inference_mode():
        output = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        return _normalise(_features(output))[0]


def build_tiny(path: Path, *, image_size: int = 32, dim: int = 32) -> Path:
    """A tiny CLIP with random weights built from a config (no download), saved where `path` says: for tests
    and for trying semantic search without a real model."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = {token: n for n, token in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    config = CLIPConfig(
        text_config={"hidden_size": dim, "intermediate_size": dim * 2, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "vocab_size": len(vocab), "max_position_embeddings": 64,
                     "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"]},
        vision_config={"hidden_size": dim, "intermediate_size": dim * 2, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": image_size, "patch_size": 8},
        projection_dim=dim,
    )
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    CLIPModel(config).save_pretrained(path)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
                       ).save_pretrained(path)
    return path
