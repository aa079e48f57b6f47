"""The small config files of each family's published checkpoints, so single files load with no hub.

Each folder here is a diffusers folder without weights: model_index.json, the component configs, the scheduler
config and the tokenizer settings, copied from the families' published configs. The CLIP BPE vocabulary
(``clip_tokenizer/``: vocab.json and merges.txt, shared by every CLIP and OpenCLIP text encoder of SD1.x, SD2.x
and SDXL) was made from CLIP's published BPE merges (open_clip's ``bpe_simple_vocab_16e6.txt.gz``) by the rule in
CLIP's SimpleTokenizer: 256 byte symbols, the same with ``</w>``, the first 48,894 merges, then the start and end
tokens (49,408 in all). ``config_folder`` assembles a complete folder once per machine and returns it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
TOKENIZER_FILES = ("vocab.json", "merges.txt")


def config_folder(name: str) -> Path:
    """A complete local config folder for the family config ``name`` (sd15, sd2, sdxl)."""
    source = HERE / name
    if not (source / "model_index.json").is_file():
        raise FileNotFoundError(f"No shipped configs named {name!r}.")
    files = sorted(p for p in source.rglob("*") if p.is_file())
    digest = hashlib.sha256(b"".join(p.relative_to(source).as_posix().encode() + p.read_bytes() for p in files))
    root = Path(os.environ.get("IMAGINEER_CACHE_DIR") or tempfile.gettempdir()) / "model-configs"
    target = root / f"{name}-{digest.hexdigest()[:12]}"
    if (target / "model_index.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        for file in files:
            dest = tmp / file.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, dest)
        for tokenizer in (p for p in tmp.iterdir() if p.is_dir() and p.name.startswith("tokenizer")):
            for shared in TOKENIZER_FILES:
                shutil.copyfile(HERE / "clip_tokenizer" / shared, tokenizer / shared)
        tmp.chmod(0o755)
        try:
            os.replace(tmp, target)  # another process may have won the race: its folder is the same
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
