"""Tiny stand-ins for the offline labelers, built here (no downloads): tests only.

`build_tiny_tagger` writes a WD14-shaped ONNX graph (NHWC float32 BGR 448x448 in, one score per tag out)
plus a small selected_tags.csv. The scores come from the picture's mean B, G and R through fixed weights,
so a test picks which tags fire by the colour it paints:

    red picture    -> "red theme", "long hair" (0.82), character "hatsune miku" (0.82), rating explicit
    blue picture   -> "blue sky", rating general
    white picture  -> "white background", rating general

`build_tiny_captioner` writes a BLIP checkpoint made from a small config with random weights and a
local word-piece vocabulary; `favour` biases its output layer so greedy decoding writes one word again
and again (or nothing at all, when it favours the end token), which makes the caption predictable.
"""

from __future__ import annotations

import csv
from pathlib import Path

# name, category, weights on mean (B, G, R) in 0..1, bias
TINY_TAGS = [
    ("general", 9, (6, 6, -6), 0),
    ("sensitive", 9, (0, 0, 0), -4),
    ("questionable", 9, (0, 0, 0), -4),
    ("explicit", 9, (-6, -6, 6), 0),
    ("red_theme", 0, (-5, -5, 5), 0),
    ("blue_sky", 0, (5, -5, -5), 0),
    ("long_hair", 0, (-2, -2, 1.5), 0),
    ("hatsune_miku", 4, (-2, -2, 1.5), 0),
    ("white_background", 0, (3, 3, 3), -6),
]


def build_tiny_tagger(folder: Path, *, size: int = 448, tags=TINY_TAGS, extra_outputs: int = 0) -> Path:
    """Write model.onnx and selected_tags.csv into `folder`. `extra_outputs` adds scores no tag row
    matches (a model and a tag list that do not belong together)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    n = len(tags) + extra_outputs
    weights = np.zeros((3, n), dtype=np.float32)
    bias = np.zeros((n,), dtype=np.float32)
    for index, (_, _, w, b) in enumerate(tags):
        weights[:, index] = w
        bias[index] = b
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input_1:0", "axes"], ["mean"], keepdims=0),
            helper.make_node("Mul", ["mean", "scale"], ["unit"]),
            helper.make_node("MatMul", ["unit", "weights"], ["logits"]),
            helper.make_node("Add", ["logits", "bias"], ["shifted"]),
            helper.make_node("Sigmoid", ["shifted"], ["predictions_sigmoid"]),
        ],
        "tiny_wd_tagger",
        [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, ["batch", size, size, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["batch", n])],
        initializer=[
            numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"),
            numpy_helper.from_array(np.array([1 / 255.0], dtype=np.float32), "scale"),
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    with open(folder / "selected_tags.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tag_id", "name", "category", "count"])
        for index, (name, category, _, _) in enumerate(tags):
            writer.writerow([1000 + index, name, category, 100 - index])
    return folder


CAPTION_WORDS = ["a", "photo", "of", "cat", "dog", "red", "blue", "sky", "on", "the", "table"]


def build_tiny_captioner(folder: Path, *, favour: str | None = "cat") -> Path:
    """Save a tiny BLIP captioner (model, tokenizer, image processor) into `folder`.

    favour: a word of CAPTION_WORDS that greedy decoding then writes every step; "[SEP]" makes it stop
    at once (an empty caption); None leaves the random weights alone.
    """
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    vocab = special + CAPTION_WORDS
    ids = {token: index for index, token in enumerate(vocab)}
    # transformers 5 takes the vocabulary in memory (a vocab_file argument is ignored).
    tokenizer = BertTokenizer(vocab=ids, do_lower_case=True, bos_token="[DEC]",  # noqa: S106 - a token, not a password
                              model_max_length=64)
    config = BlipConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 64,
                     "encoder_hidden_size": 32, "bos_token_id": ids["[DEC]"], "pad_token_id": ids["[PAD]"],
                     "sep_token_id": ids["[SEP]"], "eos_token_id": ids["[SEP]"]},
        projection_dim=32,
    )
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config).eval()
    model.config.decoder_start_token_id = ids["[DEC]"]
    if favour is not None:
        head = model.text_decoder.cls.predictions.decoder
        with torch.no_grad():
            head.weight.zero_()
            head.bias.fill_(-10.0)
            head.bias[ids[favour]] = 10.0
    model.save_pretrained(folder)
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    processor.save_pretrained(folder)
    return folder
