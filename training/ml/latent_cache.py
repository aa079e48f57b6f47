"""Per-run caches of VAE latents and text embeddings, so the frozen encoders run once per distinct input.

A latent is cached as its distribution (mean and std), keyed by the image, the bucket and the exact crop and
flip, so a cached step draws the same VAE sample from the step's generator as the live path: cached and
uncached training agree up to float rounding. With random flips both orientations end up cached; with random
crops each distinct crop is its own entry. Text embeddings are keyed by the caption (after dropout, tag shuffling
and the trigger word) and the clip skip. Training the text encoder turns the text cache off: its output changes
every step.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

# Bounds the memory a long run with random crops can use; the oldest entries go first.
MAX_LATENTS = 4096
MAX_TEXTS = 8192


class _Lru:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: OrderedDict[Hashable, Any] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        value = self.items.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
            self.items.move_to_end(key)
        return value

    def put(self, key: Hashable, value: Any) -> None:
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.limit:
            self.items.popitem(last=False)


class EncoderCache:
    """Latent distributions and text embeddings of one run (scope: its snapshot and resolution)."""

    def __init__(self, *, scope: Hashable, latents: bool, texts: bool) -> None:
        self.scope = scope
        self.latents = _Lru(MAX_LATENTS) if latents else None
        self.texts = _Lru(MAX_TEXTS) if texts else None

    def latent_params(
        self, keys: Sequence[Hashable], encode: Callable[[list[int]], tuple[Any, Any]]
    ) -> tuple[Any, Any]:
        """Stacked (mean, std) for the keys; `encode(indices)` computes the missing ones as a batch."""
        import torch

        if self.latents is None:
            return encode(list(range(len(keys))))
        found = [self.latents.get((self.scope, key)) for key in keys]
        missing = [i for i, value in enumerate(found) if value is None]
        if missing:
            mean, std = encode(missing)
            for row, index in enumerate(missing):
                value = (mean[row].detach().clone(), std[row].detach().clone())
                self.latents.put((self.scope, keys[index]), value)
                found[index] = value
        return torch.stack([v[0] for v in found]), torch.stack([v[1] for v in found])

    def text(self, captions: Sequence[str], encode: Callable[[list[str]], tuple[Any, ...]]) -> tuple[Any, ...]:
        """Stacked encoder outputs (each a tensor with a batch dimension) for the captions."""
        import torch

        if self.texts is None:
            return encode(list(captions))
        found = [self.texts.get((self.scope, c)) for c in captions]
        missing = sorted({c for c, v in zip(captions, found, strict=True) if v is None})
        if missing:
            outputs = encode(missing)
            for row, caption in enumerate(missing):
                self.texts.put((self.scope, caption), tuple(o[row].detach().clone() for o in outputs))
            found = [self.texts.items[(self.scope, c)] for c in captions]
        return tuple(torch.stack(parts) for parts in zip(*found, strict=True))

    def stats(self) -> dict[str, int]:
        out = {}
        for name, lru in (("latent", self.latents), ("text", self.texts)):
            if lru is not None:
                out[f"{name}_hits"], out[f"{name}_misses"] = lru.hits, lru.misses
        return out
