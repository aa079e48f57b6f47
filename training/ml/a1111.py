"""AUTOMATIC1111's "parameters" text: writing it, reading it back, and carrying it in a PNG.

Civitai, A1111, Forge and ComfyUI import prompts and settings from this text, so a generated image that
carries it can be reproduced elsewhere. Only Pillow and the standard library are used: the web process
reads parameters from uploaded PNGs without loading torch.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# A field is "Name: value," where value may be JSON-quoted when it holds a comma, colon or newline.
# Keys are bounded in length so a long hostile line cannot make the scan quadratic.
# No leading \s*: findall skips whitespace by itself, and a leading \s* made a long run of spaces quadratic.
_FIELD = re.compile(r'(\w[\w \-/]{0,63}):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_LORA_OPEN = "<lora:"
_NEGATIVE = "Negative prompt:"
# The text comes from any uploaded PNG. A1111's own parameters are a few KB; longer text is cut here, and
# only so many LoRA tags are read from it (the rest are still removed from the prompt).
MAX_PARAMETERS_CHARS = 32 * 1024
MAX_LORA_TAGS = 32

# Our scheduler -> (sampler, schedule type) as A1111 >= 1.9 writes them. A schedule of None: the sampler has no
# schedule choice (A1111's DDIM, PLMS, UniPC and LCM). "Uniform" is A1111's name for the model's own discrete
# sigmas, which is what a diffusers scheduler without Karras or exponential sigmas samples.
A1111_SAMPLERS: dict[str, tuple[str, str | None]] = {
    "euler": ("Euler", "Uniform"),
    "euler_a": ("Euler a", "Uniform"),
    "heun": ("Heun", "Uniform"),
    "lms": ("LMS", "Uniform"),
    "lms_karras": ("LMS", "Karras"),
    "dpm2": ("DPM2", "Uniform"),
    "dpm2_a": ("DPM2 a", "Uniform"),
    "dpmpp_2m": ("DPM++ 2M", "Uniform"),
    "dpmpp_2m_karras": ("DPM++ 2M", "Karras"),
    "dpmpp_2m_exponential": ("DPM++ 2M", "Exponential"),
    "dpmpp_2m_sde": ("DPM++ 2M SDE", "Uniform"),
    "dpmpp_2m_sde_karras": ("DPM++ 2M SDE", "Karras"),
    "dpmpp_2m_sde_exponential": ("DPM++ 2M SDE", "Exponential"),
    "ddim": ("DDIM", None),
    "pndm": ("PLMS", None),
    "unipc": ("UniPC", None),
    "lcm": ("LCM", None),
    "flow_euler": ("Euler", "Simple"),  # as Forge writes Flux images
}
# The schedule A1111 >= 1.9 uses for "Automatic" (or no "Schedule type" at all): each sampler's own default.
A1111_AUTOMATIC_SCHEDULE = {
    "DPM++ 2M": "Karras", "DPM++ SDE": "Karras", "DPM++ 2S a": "Karras", "DPM2": "Karras", "DPM2 a": "Karras",
    "DPM++ 2M SDE": "Exponential", "DPM++ 2M SDE Heun": "Exponential", "DPM++ 3M SDE": "Exponential",
}
_SCHEDULE_SUFFIXES = ("Karras", "Exponential")  # A1111 < 1.9 wrote "DPM++ 2M Karras" as one sampler name


def a1111_sampler(scheduler: str) -> tuple[str, str | None]:
    """(Sampler, Schedule type) for one of our schedulers; an unknown name is written as it is."""
    return A1111_SAMPLERS.get(scheduler, (scheduler, None))


def scheduler_from_a1111(sampler: str, schedule: str | None = None, *, flow: bool = False) -> str | None:
    """Our scheduler for A1111's Sampler and Schedule type, following A1111's rules: an old combined name
    ("DPM++ 2M Karras"), "Automatic" or no schedule meaning the sampler's default. None: we have no match.
    ``flow``: the image is from a flow-matching model (Flux), where Euler means our flow Euler."""
    sampler = sampler.strip()
    schedule = (schedule or "").strip()
    if not schedule:
        for suffix in _SCHEDULE_SUFFIXES:
            if sampler.endswith(" " + suffix):
                sampler, schedule = sampler[: -len(suffix) - 1], suffix
    if schedule in ("", "Automatic"):
        schedule = A1111_AUTOMATIC_SCHEDULE.get(sampler, "Uniform")
    if flow:
        return "flow_euler" if sampler == "Euler" else None
    for name, (ours, our_schedule) in A1111_SAMPLERS.items():
        if ours.lower() != sampler.lower():
            continue
        if our_schedule is None or our_schedule.lower() == schedule.lower():
            return name
    return None


def a1111_parameters(
    prompt: str,
    negative_prompt: str | None,
    steps: int,
    sampler: str,
    cfg_scale: float,
    seed: int,
    width: int,
    height: int,
    model_name: str = "",
    model_hash: str = "",
    loras: Sequence[tuple[str, float]] = (),
    *,
    lora_hashes: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """The text A1111 stores in a PNG's "parameters" chunk; LoRAs go into the prompt as <lora:name:weight>.

    `sampler` is one of our scheduler names (e.g. "dpmpp_2m_karras", written as "Sampler: DPM++ 2M, Schedule
    type: Karras" as A1111 >= 1.9 does) or else written as given. `lora_hashes` are the A1111 hashes of the
    kohya files, the ones A1111 and Civitai users hold.
    """
    label, schedule = a1111_sampler(sampler)
    tags = [f"<lora:{name}:{_number(weight)}>" for name, weight in loras if f"<lora:{name}:" not in prompt]
    lines = [" ".join([prompt.strip(), *tags]).strip()]
    negative_prompt = (negative_prompt or "").strip()
    if negative_prompt:
        lines.append(f"{_NEGATIVE} {negative_prompt}")
    fields: dict[str, Any] = {
        "Steps": steps,
        "Sampler": label,
        "Schedule type": schedule or "",
        "CFG scale": _number(cfg_scale),
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model hash": model_hash,
        "Model": model_name,
    }
    if lora_hashes:
        fields["Lora hashes"] = ", ".join(f"{name}: {digest}" for name, digest in lora_hashes.items())
    fields.update(extra or {})
    fields["Version"] = "Imagineer"
    lines.append(", ".join(f"{key}: {_quote(str(value))}" for key, value in fields.items() if value != ""))
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{float(value):g}"


def _quote(text: str) -> str:
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        try:
            return str(json.loads(text))
        except ValueError:
            return text
    return text


def parse_a1111_parameters(text: str) -> dict[str, Any]:
    """Read A1111 parameters text into a dict.

    Keys: prompt (LoRA tags removed), raw_prompt, negative_prompt, loras [(name, weight)], fields (every
    "Name: value" as text), and where present steps, sampler, scheduler (our name), cfg_scale, seed,
    width, height, model, model_hash, lora_hashes {name: hash}.
    """
    *lines, last = text[:MAX_PARAMETERS_CHARS].strip().split("\n")
    if len(_FIELD.findall(last)) < 3:  # no settings line: the whole text is prompt (and negative prompt)
        lines.append(last)
        last = ""
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        if not in_negative and line.strip().startswith(_NEGATIVE):
            in_negative = True
            line = line.strip()[len(_NEGATIVE) :]
        (negative_lines if in_negative else prompt_lines).append(line)
    raw_prompt = "\n".join(prompt_lines).strip()
    fields = {key.strip(): _unquote(value.strip()) for key, value in _FIELD.findall(last)}
    tags = _lora_tags(raw_prompt)
    kept, start = [], 0
    for tag_start, tag_end, _name, _weight in tags:
        kept.append(raw_prompt[start:tag_start])
        start = tag_end
    kept.append(raw_prompt[start:])
    result: dict[str, Any] = {
        "raw_prompt": raw_prompt,
        "prompt": re.sub(r"\s{2,}", " ", "".join(kept)).strip(),
        "negative_prompt": "\n".join(negative_lines).strip(),
        "loras": [(name, _float(weight, 1.0)) for _start, _end, name, weight in tags[:MAX_LORA_TAGS]],
        "fields": fields,
    }
    result.update(_typed_fields(fields))
    return result


def _lora_tags(text: str) -> list[tuple[int, int, str, str | None]]:
    """(start, end, name, weight text or None) of every "<lora:name[:weight[:more]]>" tag, in one pass.

    A scanner, not a regex: a backtracking pattern took seconds on a prompt of a few thousand unclosed
    "<lora:". Each character is looked at a bounded number of times. The name is at least one character
    with no ':' or '>'; the tag ends at the first '>' after it.
    """
    tags: list[tuple[int, int, str, str | None]] = []
    pos = 0
    while True:
        start = text.find(_LORA_OPEN, pos)
        if start < 0:
            return tags
        body = start + len(_LORA_OPEN)
        if body >= len(text) or text[body] in ":>":  # no name: not a tag, look on from the next character
            pos = start + 1
            continue
        end = text.find(">", body)
        if end < 0:  # no '>' anywhere after: no later tag can close either
            return tags
        name, sep, rest = text[body:end].partition(":")
        weight = rest.partition(":")[0] if sep else None
        tags.append((start, end + 1, name, weight))
        pos = end + 1


def _typed_fields(fields: Mapping[str, str]) -> dict[str, Any]:
    """Typed values for the well-known fields; malformed ones (the text may come from any PNG) are skipped."""
    typed: dict[str, Any] = {}
    for key, name, convert in (("Steps", "steps", int), ("CFG scale", "cfg_scale", float), ("Seed", "seed", int)):
        value = _convert(convert, fields.get(key))
        if value is not None:
            typed[name] = value
    if "Sampler" in fields:
        typed["sampler"] = fields["Sampler"]
        if fields.get("Schedule type"):
            typed["schedule_type"] = fields["Schedule type"]
        typed["scheduler"] = scheduler_from_a1111(fields["Sampler"], fields.get("Schedule type"))
    if re.fullmatch(r"\d{1,6}x\d{1,6}", fields.get("Size", "")):
        typed["width"], typed["height"] = (int(n) for n in fields["Size"].split("x"))
    if "Model" in fields:
        typed["model"] = fields["Model"]
    if "Model hash" in fields:
        typed["model_hash"] = fields["Model hash"]
    if "Lora hashes" in fields:
        pairs = (item.rsplit(":", 1) for item in fields["Lora hashes"].split(",") if ":" in item)
        typed["lora_hashes"] = {name.strip(): digest.strip() for name, digest in pairs}
    return typed


def _convert(convert: Any, text: str | None) -> Any:
    if text is None:
        return None
    try:
        return convert(text)
    except ValueError:
        return None


def _float(text: str | None, default: float) -> float:
    try:
        return float(text) if text not in (None, "") else default
    except ValueError:
        return default


# --- PNG ----------------------------------------------------------------------------------------------


def png_bytes_with_parameters(image: Any, parameters: str) -> bytes:
    """Encode a PIL image as PNG with the text in a tEXt/iTXt chunk named "parameters", as A1111 does."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_png_parameters(data: bytes) -> str | None:
    """The "parameters" text of a PNG, or None when it has none."""
    from PIL import Image

    with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
        img.load()
        value = getattr(img, "text", {}).get("parameters")
    return str(value)[:MAX_PARAMETERS_CHARS] if value is not None else None


# --- hashes A1111 shows -------------------------------------------------------------------------------


def model_hash(path: Path) -> str:
    """A1111's "Model hash": the first 10 hex digits of the file's sha256."""
    return _sha256(Path(path), skip=0)[:10]


def lora_hash(path: Path) -> str:
    """A1111's LoRA hash ("addnet" hash): sha256 of a .safetensors file's tensor data, first 12 digits.

    The JSON header is skipped, so editing metadata does not change the hash.
    """
    path = Path(path)
    with path.open("rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
    return _sha256(path, skip=8 + header_len)[:12]


def _sha256(path: Path, *, skip: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        handle.seek(skip)
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
