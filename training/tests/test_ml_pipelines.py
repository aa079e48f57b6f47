"""Loading pipelines, the warm cache, and switching LoRAs without reloading the base model."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from training.ml.errors import ModelNotFound, WrongModelKind
from training.ml.generate import generate
from training.ml.pipelines import (
    LoraSpec,
    PipelineCache,
    apply_loras,
    detect_source_type,
    load_pipeline,
    pipeline_cache,
    resolve_device,
)

PARAMS = dict(prompt="a red square", steps=3, width=32, height=32, seed=3, scheduler="euler")


def _image(pipe) -> np.ndarray:
    return np.asarray(generate(pipe, **PARAMS)[0], dtype=np.int16)


def test_device_selection_follows_the_preference():
    import torch

    assert resolve_device("cpu") == "cpu"
    has_accelerator = torch.cuda.is_available() or torch.backends.mps.is_available()
    assert resolve_device("auto") == resolve_device(None) and (resolve_device("auto") != "cpu") == has_accelerator
    with pytest.raises(ValueError, match="auto, cpu, cuda, mps"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_source_types_are_detected(tiny_model, tmp_path):
    assert detect_source_type(str(tiny_model)) == "folder"
    assert detect_source_type(str(tmp_path / "model.safetensors")) == "single_file"
    assert detect_source_type("stabilityai/stable-diffusion-xl-base-1.0") == "hub"


def test_loading_explains_missing_and_wrong_models(tiny_model, tmp_path):
    import torch
    from safetensors.torch import save_file

    with pytest.raises(ModelNotFound, match="does not exist"):
        load_pipeline(str(tmp_path / "nope"), kind="sd15", source_type="folder", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="no model_index.json"):
        load_pipeline(str(tmp_path / "empty"), kind="sd15", device="cpu")
    with pytest.raises(WrongModelKind, match=r"is a Stable Diffusion 1.5 model \(sd15\) but kind='sdxl'"):
        load_pipeline(str(tiny_model), kind="sdxl", device="cpu")
    with pytest.raises(ModelNotFound, match="does not exist"):
        load_pipeline(str(tmp_path / "gone.safetensors"), kind="sd15", device="cpu")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ModelNotFound, match="is not a .safetensors checkpoint"):
        load_pipeline(str(tmp_path / "notes.txt"), kind="sd15", source_type="single_file", device="cpu")
    xl = tmp_path / "xl.safetensors"
    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.zeros(2),
               "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2)}, str(xl))
    with pytest.raises(WrongModelKind, match=r"is a Stable Diffusion XL model \(sdxl\)"):
        load_pipeline(str(xl), kind="sd15", device="cpu")
    with pytest.raises(ModelNotFound, match="neither an existing path nor a hub id"):
        load_pipeline("not a model", kind="sd15", source_type="hub", device="cpu")
    with pytest.raises(ValueError, match="kind must be one of"):
        load_pipeline(str(tiny_model), kind="sd3", device="cpu")


def test_the_cache_loads_each_base_model_once_and_evicts_the_oldest(tiny_model, tmp_path):
    import shutil

    other = tmp_path / "copy"
    shutil.copytree(tiny_model, other)
    cache = PipelineCache(max_entries=1)

    first = cache.get(str(tiny_model), kind="sd15", key="a", device="cpu")
    assert cache.get(str(tiny_model), kind="sd15", key="a", device="cpu") is first
    second = cache.get(str(other), kind="sd15", key="b", device="cpu")
    assert second is not first and cache.keys() == ["b"]
    cache.get(str(tiny_model), kind="sd15", key="a", device="cpu")
    assert cache.load_counts == {"a": 2, "b": 1}
    assert cache.evict("a") and not cache.evict("a") and cache.keys() == []
    assert pipeline_cache() is pipeline_cache()


def test_concurrent_requests_share_one_load(tiny_model):
    cache = PipelineCache(max_entries=2)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get(str(tiny_model), kind="sd15", device="cpu")))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 3 and all(r is results[0] for r in results)
    assert cache.load_counts == {f"sd15:{tiny_model}": 1}


def test_lora_weight_zero_is_the_base_model_and_one_changes_the_image(trained, tiny_pipe):
    result, _ = trained
    apply_loras(tiny_pipe, [])
    plain = _image(tiny_pipe)

    apply_loras(tiny_pipe, [LoraSpec("style", result.lora_path, 0.0)])
    zero = _image(tiny_pipe)
    apply_loras(tiny_pipe, [LoraSpec("style", result.lora_path, 1.0)])
    full = _image(tiny_pipe)
    apply_loras(tiny_pipe, [])

    assert np.abs(zero - plain).max() <= 1
    assert np.abs(full - plain).max() > 8
    assert np.array_equal(_image(tiny_pipe), plain), "an empty LoRA list restores the base model"


def test_two_loras_at_once_and_each_file_is_loaded_once(trained, tiny_pipe):
    result, _ = trained
    early = result.checkpoints[0] / "pytorch_lora_weights.safetensors"  # a different, less trained LoRA
    late = LoraSpec("late", result.lora_path, 1.0)

    apply_loras(tiny_pipe, [late])
    only_late = _image(tiny_pipe)
    names = apply_loras(tiny_pipe, [late, LoraSpec("early", early, 0.8)])
    active = tiny_pipe.get_active_adapters()
    both = _image(tiny_pipe)
    loaded_before = list(tiny_pipe.get_list_adapters()["unet"])
    apply_loras(tiny_pipe, [late, LoraSpec("early", early, 0.8)])
    apply_loras(tiny_pipe, [])

    assert len(names) == 2 and sorted(active) == sorted(names)
    assert loaded_before == list(tiny_pipe.get_list_adapters()["unet"]), "no adapter is loaded twice"
    assert np.abs(both - only_late).max() > 0


def test_a_missing_lora_file_is_reported(tiny_pipe, tmp_path):
    with pytest.raises(ModelNotFound, match="LoRA file .* does not exist"):
        apply_loras(tiny_pipe, [LoraSpec("gone", tmp_path / "gone.safetensors", 1.0)])


def test_model_index_class_decides_the_kind(tmp_path, tiny_model):
    import shutil

    copy = tmp_path / "odd"
    shutil.copytree(tiny_model, copy)
    index = json.loads((copy / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusion3Pipeline"
    (copy / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(WrongModelKind, match=r"is a Stable Diffusion 3 / 3.5 model \(StableDiffusion3Pipeline\)"):
        load_pipeline(str(copy), kind="sd15", device="cpu")
    index["_class_name"] = "SomeNewPipeline"
    (copy / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(WrongModelKind, match="holds a SomeNewPipeline pipeline, which is not a family"):
        load_pipeline(str(copy), kind="sd15", device="cpu")
