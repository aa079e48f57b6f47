"""The tiny model builds deterministically, loads back, and the ML package keeps heavy imports out."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np


def _weights_digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*.safetensors"))
    }


def test_the_same_seed_builds_bit_identical_weights(tmp_path, tiny_model):
    from training.ml.tiny import build_tiny_pipeline

    again = build_tiny_pipeline(tmp_path / "again", seed=0)
    other = build_tiny_pipeline(tmp_path / "other", seed=1)

    assert _weights_digest(again) == _weights_digest(tiny_model)
    assert len(_weights_digest(again)) == 3  # unet, vae, text encoder
    assert _weights_digest(other) != _weights_digest(tiny_model)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folder is left behind"


def test_the_tiny_model_loads_back_and_generates(tiny_pipe):
    import torch

    assert type(tiny_pipe).__name__ == "StableDiffusionPipeline"
    assert tiny_pipe.unet.config.cross_attention_dim == 32
    assert tiny_pipe.text_encoder.config.num_hidden_layers == 5
    assert tiny_pipe.tokenizer("a cat").input_ids[0] == tiny_pipe.tokenizer.bos_token_id
    image = tiny_pipe(
        "a cat", num_inference_steps=2, width=32, height=32, generator=torch.Generator().manual_seed(0)
    ).images[0]
    assert image.size == (32, 32)
    assert np.asarray(image).std() > 0


def test_importing_the_ml_package_does_not_import_torch():
    modules = [
        "training.ml",
        *(
            f"training.ml.{m}"
            for m in (
                "errors",
                "a1111",
                "generate",
                "pipelines",
                "train",
                "train_config",
                "trainer",
                "data",
                "kohya",
                "checkpoints",
                "tiny",
                "optim",
                "latent_cache",
            )
        ),
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'peft', 'accelerate') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)
