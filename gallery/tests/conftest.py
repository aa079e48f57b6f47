import pytest

from imagineer.testing import image_bytes, stored_files  # noqa: F401 - re-exported for the gallery tests


@pytest.fixture(autouse=True)
def _isolated_media(media_root):
    """Every gallery test stores files in its own folder."""
    return media_root


@pytest.fixture
def make_image_bytes():
    return image_bytes


CAPTIONS = ["a red fox", "a blue whale", "green forest", "yellow sun", "purple grapes", "white snow"]
# Captions the model also learns for the distractor pictures, so they are real competitors, not noise.
OTHER_CAPTIONS = ["black cat", "orange car", "pink flower", "brown dog", "silver coin", "golden key"]


def caption_picture(n: int) -> bytes:
    """Picture n of CAPTIONS + OTHER_CAPTIONS."""
    return image_bytes("PNG", size=(64, 64), seed=900 + n)


@pytest.fixture(scope="session")
def trained_clip(tmp_path_factory):
    """A tiny CLIP built from a config, then trained contrastively for a few seconds so that each of six captions
    finds its own picture: a real model whose right answer we know."""
    import io as _io

    import torch
    from PIL import Image as PILImage
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    from gallery.semantic.clip import build_tiny

    torch.manual_seed(0)
    path = build_tiny(tmp_path_factory.mktemp("clip") / "tiny-clip")
    model = CLIPModel.from_pretrained(path)
    tokenizer, processor = CLIPTokenizer.from_pretrained(path), CLIPImageProcessor.from_pretrained(path)
    captions = CAPTIONS + OTHER_CAPTIONS
    pictures = [PILImage.open(_io.BytesIO(caption_picture(n))).convert("RGB") for n in range(len(captions))]
    pixels = processor(images=pictures, return_tensors="pt")["pixel_values"]
    text = tokenizer(captions, padding=True, return_tensors="pt")
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(400):
        out = model(input_ids=text["input_ids"], attention_mask=text["attention_mask"], pixel_values=pixels,
                    return_loss=True)
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
        if out.loss.item() < 0.005:
            break
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                       pixel_values=pixels).logits_per_text
    assert logits.argmax(dim=1).tolist() == list(range(len(captions))), "the tiny CLIP did not learn its captions"
    model.save_pretrained(path)
    return path
