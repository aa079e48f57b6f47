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


# A1111's LoRA loader (extensions-builtin/Lora, convert_diffusers_name_to_compvis) maps these diffusers-style
# kohya names onto its own modules; ComfyUI's key map covers the same names. A name outside them is ignored there.
_RESNET_PARTS = r"(conv1|conv2|time_emb_proj|conv_shortcut)"
_A1111_NAMES = [
    r"lora_unet_(down_blocks_\d+|mid_block|up_blocks_\d+)_attentions_\d+_(proj_in|proj_out|transformer_blocks_\d+_"
    r"(attn[12]_(to_q|to_k|to_v|to_out_0)|ff_net_0_proj|ff_net_2))",
    rf"lora_unet_(down_blocks_\d+|mid_block|up_blocks_\d+)_resnets_\d+_{_RESNET_PARTS}",
    r"lora_unet_down_blocks_\d+_downsamplers_0_conv",
    r"lora_unet_up_blocks_\d+_upsamplers_0_conv",
    r"lora_te[12]?_text_model_encoder_layers_\d+_(self_attn_(q|k|v|out)_proj|mlp_fc[12])",
]


def _a1111_name(name: str) -> bool:
    import re

    return any(re.fullmatch(pattern, name) for pattern in _A1111_NAMES)


@pytest.fixture(scope="module")
def module_set_runs(tmp_path_factory, tiny_model, tiny_dataset):
    """One short run per module set, the larger ones with a text-encoder LoRA."""
    from training.ml.train import TrainConfig, train_lora

    runs = {}
    for module_set, text in (("attention", False), ("kohya", True), ("locon", True)):
        config = TrainConfig(steps=2, batch_size=2, learning_rate=3e-2, rank=4, alpha=2.0, resolution=32, seed=5,
                             lora_modules=module_set, train_text_encoder=text)
        runs[module_set] = train_lora(base_model=str(tiny_model), kind="sd15", dataset=tiny_dataset,
                                      output_dir=tmp_path_factory.mktemp(module_set), config=config,
                                      name=f"set_{module_set}", device="cpu")
    return runs


@pytest.mark.parametrize("module_set", ["attention", "kohya", "locon"])
def test_every_module_set_exports_names_a1111_and_diffusers_map(module_set_runs, tiny_pipe, module_set):
    result = module_set_runs[module_set]
    with safe_open(str(result.kohya_path), framework="pt") as handle:
        keys = list(handle.keys())
    names = {k.split(".")[0] for k in keys}
    assert not [n for n in names if not _a1111_name(n)]
    assert all({f"{n}.lora_down.weight", f"{n}.lora_up.weight", f"{n}.alpha"} <= set(keys) for n in names)
    assert any(n.startswith("lora_te_") for n in names) == (module_set != "attention")

    # diffusers' kohya key map refuses a file with keys it cannot place, and every layer must land.
    params = dict(prompt="a red square", steps=4, width=32, height=32, seed=11, scheduler="euler")
    counts = {}
    for fmt, path in (("diffusers", result.lora_path), ("kohya", result.kohya_path)):
        [adapter] = apply_loras(tiny_pipe, [LoraSpec(f"{module_set}-{fmt}", path, 1.0)])
        counts[fmt] = sum(
            1 for model in (tiny_pipe.unet, tiny_pipe.text_encoder) for key in model.state_dict()
            if f".lora_B.{adapter}." in key
        )
        counts[f"{fmt}-image"] = np.asarray(generate(tiny_pipe, **params)[0], dtype=np.int16)
    apply_loras(tiny_pipe, [])
    plain = np.asarray(generate(tiny_pipe, **params)[0], dtype=np.int16)

    assert counts["diffusers"] == counts["kohya"] == len(names)
    assert np.abs(counts["diffusers-image"] - plain).max() > 8
    assert np.abs(counts["diffusers-image"] - counts["kohya-image"]).max() <= 1


def test_text_encoder_keys_use_te1_and_te2_for_sdxl():
    import torch

    from training.ml.kohya import text_encoder_prefixes, to_kohya

    down, up = torch.ones(2, 8), torch.ones(8, 2)
    layer = "encoder.layers.0.self_attn.q_proj"
    te = {f"{layer}.lora_A.weight": down, f"{layer}.lora_B.weight": up}
    prefixes = text_encoder_prefixes("sdxl")
    names = {k.split(".")[0] for attr in ("text_encoder", "text_encoder_2")
             for k in to_kohya(te, alpha=1, prefix=prefixes[attr])}
    assert names == {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
                     "lora_te2_text_model_encoder_layers_0_self_attn_q_proj"}
    assert all(_a1111_name(n) for n in names)
    assert text_encoder_prefixes("sd15") == {"text_encoder": "lora_te"}
