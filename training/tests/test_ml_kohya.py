"""The kohya-format file has A1111/ComfyUI keys and gives the same images as the diffusers file."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors import safe_open

from training.ml.generate import generate
from training.ml.kohya import to_kohya
from training.ml.pipelines import LoraSpec, apply_loras

pytestmark = pytest.mark.slow


def test_kohya_keys_carry_lora_unet_names_and_alpha(trained):
    result, _ = trained
    with safe_open(str(result.kohya_path), framework="pt") as handle:
        keys = list(handle.keys())
        metadata = handle.metadata()
        alphas = {k: handle.get_tensor(k) for k in keys if k.endswith(".alpha")}

    assert keys and all(k.startswith("lora_unet_") for k in keys)
    names = {k.split(".")[0] for k in keys}
    assert all({f"{n}.lora_down.weight", f"{n}.lora_up.weight", f"{n}.alpha"} <= set(keys) for n in names)
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_out_0" in names
    assert all(float(a) == 2.0 for a in alphas.values())
    assert metadata["ss_network_dim"] == "4" and metadata["ss_network_alpha"] == "2.0"
    assert metadata["ss_base_model_version"] == "sd_v1"


def test_diffusers_loads_the_kohya_file_and_makes_the_same_image(trained, tiny_pipe):
    result, _ = trained
    params = dict(prompt="a red square", steps=4, width=32, height=32, seed=11, scheduler="euler")

    apply_loras(tiny_pipe, [LoraSpec("diffusers", result.lora_path, 1.0)])
    from_diffusers = np.asarray(generate(tiny_pipe, **params)[0], dtype=np.int16)
    apply_loras(tiny_pipe, [LoraSpec("kohya", result.kohya_path, 1.0)])
    from_kohya = np.asarray(generate(tiny_pipe, **params)[0], dtype=np.int16)
    apply_loras(tiny_pipe, [])
    plain = np.asarray(generate(tiny_pipe, **params)[0], dtype=np.int16)

    assert np.abs(from_diffusers - plain).max() > 8, "the LoRA changes the image"
    assert np.abs(from_diffusers - from_kohya).max() <= 1


def test_conversion_accepts_peft_and_diffusers_spellings():
    import torch

    down, up = torch.ones(2, 8), torch.ones(8, 2)
    peft = {
        "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": down,
        "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": up,
    }
    diffusers = {"unet." + k.replace("lora_A", "lora.down").replace("lora_B", "lora.up"): v for k, v in peft.items()}

    assert (
        to_kohya(peft, alpha=1).keys()
        == to_kohya(diffusers, alpha=1).keys()
        == {
            "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight",
            "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight",
            "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.alpha",
        }
    )
    with pytest.raises(ValueError, match="without both down and up"):
        to_kohya({k: v for k, v in peft.items() if "lora_A" in k}, alpha=1)
    with pytest.raises(ValueError, match="not a LoRA weight"):
        to_kohya({"conv_in.weight": down}, alpha=1)
