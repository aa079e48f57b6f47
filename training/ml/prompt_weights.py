"""A1111 prompt syntax: attention weights and prompts longer than CLIP's 77 tokens, turned into prompt_embeds.

Syntax, as AUTOMATIC1111's web UI reads it:
  (text)        text × 1.1        ((text)) × 1.21, and so on
  [text]        text ÷ 1.1
  (text:1.5)    text × 1.5        weights multiply when nested
  \\( \\) \\[ \\] \\\\   literal brackets and backslash
  BREAK         starts a new 75-token chunk
Unbalanced brackets are closed at the end of the prompt; a closing bracket without an opening one is text.

Long prompts are cut into chunks of 75 tokens; each chunk is encoded on its own as BOS + 75 tokens + EOS/padding
(77 tokens) and the chunks' embeddings are concatenated, so the UNet attends to all of them. Each token's
embedding is multiplied by its weight, then the chunk is rescaled so its mean stays what it was unweighted:
weights shift emphasis between tokens without changing the overall magnitude.

Parsing needs no imports; encoding imports torch and runs in the generating worker only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ROUND = 1.1
SQUARE = 1 / 1.1
CHUNK_TOKENS = 75  # CLIP's 77 minus the start and end tokens

_TOKEN = re.compile(
    r"""
    \\[()\[\]\\]                      # an escaped bracket or backslash
  | \(                                # open: × 1.1 unless closed by ":weight)"
  | \[                                # open: ÷ 1.1
  | :\s*(?P<weight>[+-]?(?:\d+\.?\d*|\.\d+))\s*\)   # ":1.5)" closes a round bracket with that weight
  | \)
  | \]
  | \bBREAK\b
  | [^\\()\[\]:B]+                   # plain text (B and ':' are handled one at a time below)
  | .                                 # anything else, one character (a lone ':' or 'B', a stray '\')
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Segment:
    text: str
    weight: float

    @property
    def is_break(self) -> bool:
        return self.weight < 0


BREAK = Segment("BREAK", -1.0)


def parse_prompt_weights(prompt: str) -> list[Segment]:
    """The prompt as (text, weight) segments in order; BREAK as its own segment; equal neighbours merged."""
    parts: list[list[Any]] = []  # [text, weight] pairs, mutable while brackets close
    round_open: list[int] = []  # index into parts where each open bracket started
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for part in parts[start:]:
            if part is not BREAK_MARK:
                part[1] *= factor

    for match in _TOKEN.finditer(prompt or ""):
        piece = match.group(0)
        if piece.startswith("\\") and len(piece) == 2 and piece[1] in "()[]\\":
            parts.append([piece[1], 1.0])
        elif piece == "(":
            round_open.append(len(parts))
        elif piece == "[":
            square_open.append(len(parts))
        elif match.group("weight") is not None:
            if round_open:
                try:
                    factor = float(match.group("weight"))
                except ValueError:
                    factor = 1.0
                scale(round_open.pop(), factor)
            else:  # ":1.2)" with nothing open: plain text
                parts.append([piece, 1.0])
        elif piece == ")" and round_open:
            scale(round_open.pop(), ROUND)
        elif piece == "]" and square_open:
            scale(square_open.pop(), SQUARE)
        elif piece == "BREAK":
            parts.append(BREAK_MARK)
        else:
            parts.append([piece, 1.0])
    for start in round_open:  # unclosed brackets count as closed at the end
        scale(start, ROUND)
    for start in square_open:
        scale(start, SQUARE)

    segments: list[Segment] = []
    for part in parts:
        if part is BREAK_MARK:
            segments.append(BREAK)
        elif not part[0]:
            continue
        elif segments and not segments[-1].is_break and abs(segments[-1].weight - part[1]) < 1e-9:
            segments[-1] = Segment(segments[-1].text + part[0], segments[-1].weight)
        else:
            segments.append(Segment(part[0], part[1]))
    return segments or [Segment("", 1.0)]


BREAK_MARK: Any = ["BREAK", None]  # identity marker inside parse_prompt_weights


def has_a1111_syntax(prompt: str) -> bool:
    return any(ch in (prompt or "") for ch in "()[]\\") or "BREAK" in (prompt or "")


# --- encoding ------------------------------------------------------------------------------------------


def token_chunks(tokenizer: Any, prompt: str) -> list[tuple[list[int], list[float]]]:
    """The prompt's tokens and weights cut into chunks of 75 (a BREAK ends a chunk early); at least one."""
    chunks: list[tuple[list[int], list[float]]] = []
    ids: list[int] = []
    weights: list[float] = []

    def flush() -> None:
        nonlocal ids, weights
        chunks.append((ids, weights))
        ids, weights = [], []

    for segment in parse_prompt_weights(prompt):
        if segment.is_break:
            flush()
            continue
        tokens = tokenizer(segment.text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        for token in tokens:
            if len(ids) == CHUNK_TOKENS:
                flush()
            ids.append(int(token))
            weights.append(segment.weight)
    if ids or not chunks:
        flush()
    return chunks


def _framed(tokenizer: Any, ids: list[int], weights: list[float]) -> tuple[list[int], list[float]]:
    """BOS + tokens + EOS, padded to 77 the way the pipeline pads (pad token, EOS for SD's tokenizer)."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    total = CHUNK_TOKENS + 2
    framed = [bos, *ids, eos] + [pad] * (CHUNK_TOKENS - len(ids))
    return framed[:total], ([1.0, *weights, 1.0] + [1.0] * (CHUNK_TOKENS - len(weights)))[:total]


def _encode_chunks(
    tokenizer: Any, encoder: Any, chunks: list[tuple[list[int], list[float]]], *, penultimate: bool
) -> tuple[Any, Any]:
    """(embeddings [1, 77 × chunks, dim], pooled output of the first chunk or None)."""
    import torch

    device = encoder.device
    pieces, pooled = [], None
    for ids, weights in chunks:
        framed, framed_weights = _framed(tokenizer, ids, weights)
        input_ids = torch.tensor([framed], device=device)
        output = encoder(input_ids, output_hidden_states=penultimate)
        hidden = output.hidden_states[-2] if penultimate else output[0]
        if pooled is None:
            pooled = getattr(output, "text_embeds", None)
        w = torch.tensor(framed_weights, device=device, dtype=hidden.dtype)[None, :, None]
        before = hidden.mean()
        weighted = hidden * w
        after = weighted.mean()
        # Keep the chunk's mean as it was unweighted (A1111's normalisation); skip it if the mean is ~0.
        if after.abs() > 1e-12:
            weighted = weighted * (before / after)
        pieces.append(weighted)
    return torch.cat(pieces, dim=1), pooled


def encode_prompts(pipe: Any, prompt: str, negative_prompt: str = "", repeat: int = 1) -> dict[str, Any]:
    """Keyword arguments for a diffusers SD1.5/SDXL pipeline call: prompt_embeds and negative_prompt_embeds
    (plus the pooled ones for SDXL), each repeated `repeat` times along the batch.

    Prompt and negative are padded with empty chunks to the same length, as A1111 does.
    """
    import torch

    encoders = [(pipe.tokenizer, pipe.text_encoder)]
    is_xl = getattr(pipe, "text_encoder_2", None) is not None
    if is_xl:
        encoders = [(t, e) for t, e in encoders if e is not None] + [(pipe.tokenizer_2, pipe.text_encoder_2)]

    def chunked(text: str) -> list[list[tuple[list[int], list[float]]]]:
        return [token_chunks(tokenizer, text) for tokenizer, _ in encoders]

    positive, negative = chunked(prompt), chunked(negative_prompt or "")
    for pos, neg in zip(positive, negative, strict=True):
        while len(pos) < len(neg):
            pos.append(([], []))
        while len(neg) < len(pos):
            neg.append(([], []))

    def embed(all_chunks) -> tuple[Any, Any]:
        outputs = [_encode_chunks(tokenizer, encoder, chunks, penultimate=is_xl)
                   for (tokenizer, encoder), chunks in zip(encoders, all_chunks, strict=True)]
        embeds = torch.cat([embedding for embedding, _ in outputs], dim=-1)
        return embeds, outputs[-1][1]

    with torch.inference_mode():
        prompt_embeds, pooled = embed(positive)
        negative_embeds, negative_pooled = embed(negative)
        if is_xl and not (negative_prompt or "").strip() and getattr(pipe.config, "force_zeros_for_empty_prompt",
                                                                     False):
            negative_embeds, negative_pooled = torch.zeros_like(negative_embeds), torch.zeros_like(negative_pooled)
    dtype = pipe.unet.dtype if getattr(pipe, "unet", None) is not None else prompt_embeds.dtype
    kwargs = {"prompt_embeds": prompt_embeds.to(dtype).repeat(repeat, 1, 1),
              "negative_prompt_embeds": negative_embeds.to(dtype).repeat(repeat, 1, 1)}
    if is_xl:
        kwargs["pooled_prompt_embeds"] = pooled.to(dtype).repeat(repeat, 1)
        kwargs["negative_pooled_prompt_embeds"] = negative_pooled.to(dtype).repeat(repeat, 1)
    return kwargs
