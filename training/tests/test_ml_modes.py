"""img2img, inpainting, hires fix and live previews on the tiny model (training.ml.modes through generate)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from training.ml.errors import GenerationCancelled
from training.ml.generate import generate
from training.ml.modes import denoise_steps, hires_size, validate_mode_params
from training.ml.pipelines import apply_loras

PARAMS = dict(prompt="a red square", steps=4, width=64, height=64, scheduler="euler", seed=11)


@pytest.fixture
def pipe(tiny_pipe):
    apply_loras(tiny_pipe, [])
    return tiny_pipe


def _px(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _source(colour="red", size=(64, 64)) -> Image.Image:
    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).ellipse((8, 8, size[0] - 8, size[1] - 8), fill="white")
    return image


def _vae_roundtrip_by_hand(pipe, image) -> np.ndarray:
    """The source encoded and decoded by the tiny VAE, computed here without the code under test."""
    import torch

    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    with torch.inference_mode():
        decoded = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mode()).sample
    out = ((decoded[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    return out.astype(np.int16)


def test_img2img_at_strength_0_returns_the_source_through_the_vae(pipe):
    source = _source()
    image = generate(pipe, **PARAMS, mode="img2img", init_image=source, strength=0.0)[0]
    txt = generate(pipe, **PARAMS)[0]

    assert image.size == (64, 64)
    assert np.abs(_px(image) - _vae_roundtrip_by_hand(pipe, source)).max() <= 2  # only the decode error is left
    assert np.abs(_px(image) - _px(txt)).mean() > 5


def test_img2img_at_strength_1_ignores_the_source(pipe):
    red = generate(pipe, **PARAMS, mode="img2img", init_image=_source("red"), strength=1.0)[0]
    blue = generate(pipe, **PARAMS, mode="img2img", init_image=_source("blue"), strength=1.0)[0]
    txt = generate(pipe, **PARAMS)[0]

    assert red.tobytes() == blue.tobytes() == txt.tobytes()


def test_img2img_in_between_depends_on_the_source_and_its_seed(pipe):
    steps = []
    red = generate(pipe, **PARAMS, mode="img2img", init_image=_source("black"), strength=0.5,
                   on_step=lambda step, total: steps.append((step, total)))[0]
    blue = generate(pipe, **PARAMS, mode="img2img", init_image=Image.new("RGB", (64, 64), "white"), strength=0.5)[0]
    again = generate(pipe, **PARAMS, mode="img2img", init_image=_source("black"), strength=0.5)[0]

    assert steps == [(1, 2), (2, 2)]  # int(4 × 0.5) denoising steps
    # The random tiny model's noise dominates, but the same source and seed give the same bytes and another
    # source a visibly different picture.
    assert np.abs(_px(red) - _px(blue)).mean() > 2
    assert red.tobytes() == again.tobytes()


def test_a_source_of_another_size_is_resized_to_the_requested_one(pipe):
    image = generate(pipe, **{**PARAMS, "width": 48, "height": 32}, mode="img2img", init_image=_source(size=(100, 70)),
                     strength=0.5)[0]
    assert image.size == (48, 32)


def test_inpainting_keeps_every_unmasked_pixel_and_repaints_the_masked_ones(pipe):
    source = _source("green")
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=255)
    images = generate(pipe, **PARAMS, mode="inpaint", init_image=source, mask_image=mask, strength=1.0, count=2)

    inside = np.asarray(mask) > 0
    for image in images:
        diff = np.abs(_px(image) - _px(source))
        assert diff[~inside].max() == 0
        assert diff[inside].mean() > 10
    assert images[0].tobytes() != images[1].tobytes()  # seed and seed + 1


def test_hires_fix_outputs_the_upscaled_size_after_a_second_pass(pipe):
    steps = []
    images = generate(pipe, **PARAMS, count=2, hires_scale=2.0, hires_steps=4, hires_strength=0.5,
                      on_step=lambda step, total: steps.append((step, total)))
    plain = generate(pipe, **PARAMS)[0]

    assert [image.size for image in images] == [(128, 128), (128, 128)]
    assert [s for s, _ in steps] == [1, 2, 3, 4, 5, 6] and {t for _, t in steps} == {6}
    # The second pass really denoised: not just the first pass resized.
    resized = plain.resize((128, 128), Image.Resampling.LANCZOS)
    assert np.abs(_px(images[0]) - _px(resized)).mean() > 2


def test_hires_fix_can_be_cancelled_in_its_second_pass(pipe):
    seen = []
    with pytest.raises(GenerationCancelled) as caught:
        generate(pipe, **PARAMS, hires_scale=1.5, hires_strength=1.0, on_step=lambda s, t: seen.append(s),
                 should_stop=lambda: len(seen) >= 5)
    assert caught.value.step == 5


def test_live_previews_come_every_n_steps_as_small_images(pipe):
    previews = []
    generate(pipe, **{**PARAMS, "steps": 7}, on_preview=lambda step, image: previews.append((step, image)),
             preview_every=3)

    assert [step for step, _ in previews] == [3, 6]
    assert all(image.mode == "RGB" and image.size == (32, 32) for _, image in previews)  # latent size
    assert _px(previews[0][1]).std() > 0


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"mode": "img2img", "strength": 0.5, "has_source": False, "has_mask": False}, "source_image"),
    ({"mode": "img2img", "strength": 1.5, "has_source": True, "has_mask": False}, "strength"),
    ({"mode": "inpaint", "strength": 0.5, "has_source": True, "has_mask": False}, "mask"),
    ({"mode": "img2img", "strength": 0.5, "has_source": True, "has_mask": True}, "mask"),
    ({"mode": "txt2img", "strength": None, "has_source": False, "has_mask": False, "hires_scale": 9.0}, "hires_scale"),
    ({"mode": "img2img", "strength": 0.5, "has_source": True, "has_mask": False, "hires_scale": 2.0}, "hires_scale"),
    ({"mode": "txt2img", "strength": None, "has_source": False, "has_mask": False, "hires_scale": 2.0,
      "hires_strength": 0.0}, "hires_strength"),
    ({"mode": "sketch", "strength": None, "has_source": False, "has_mask": False}, "mode"),
])
def test_mode_settings_are_checked_field_by_field(kwargs, field):
    assert field in validate_mode_params(**kwargs)


def test_valid_mode_settings_pass_and_sizes_are_multiples_of_8():
    assert validate_mode_params(mode="txt2img", strength=None, has_source=False, has_mask=False, hires_scale=2.0,
                                hires_strength=0.4) == {}
    assert hires_size(64, 48, 1.5) == (96, 72) and hires_size(60, 60, 1.1) == (64, 64)
    assert denoise_steps(20, 0.75) == 15 and denoise_steps(4, 0.1) == 1 and denoise_steps(4, 0) == 0


def test_generate_refuses_a_mode_without_its_inputs(pipe):
    with pytest.raises(ValueError, match="needs a source image"):
        generate(pipe, **PARAMS, mode="img2img", strength=0.5)
