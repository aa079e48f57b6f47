"""get_backend, the shared interface, and the availability errors that need no engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from labeling.backends import (
    BACKEND_NAMES,
    Backend,
    BackendUnavailable,
    ImageInput,
    UnknownBackend,
    get_backend,
)


@pytest.mark.parametrize(
    ("name", "class_name"),
    [("claude-docker", "ContainerBackend"), ("anthropic", "AnthropicBackend"), ("local", "LocalBackend"),
     ("tagger", "TaggerBackend"), ("captioner", "CaptionerBackend")],
)
def test_it_returns_each_backend_by_name(name, class_name):
    backend = get_backend(name)

    assert type(backend).__name__ == class_name
    assert backend.name == name
    assert isinstance(backend, Backend)
    assert name in BACKEND_NAMES


def test_it_rejects_an_unknown_name():
    with pytest.raises(UnknownBackend,
                       match="Unknown labeling backend 'gpt'; choose one of: local, tagger, captioner, claude-docker"):
        get_backend("gpt")


def test_importing_the_backends_loads_no_heavy_library():
    code = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'imagineer.settings.test'); django.setup();"
        "import sys, labeling.backends as b;"
        "[b.get_backend(n) for n in b.BACKEND_NAMES];"
        "from labeling.backends import container, anthropic, local, schema, prompt, tagger, captioner;"
        "print(sorted(m for m in ('docker', 'anthropic', 'nudenet', 'onnxruntime', 'cv2', 'torch', 'transformers')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


def test_image_keys_are_stable_file_names():
    def key(mime, name="x.bin"):
        return ImageInput(id=7, path=Path(name), mime=mime, width=1, height=1).key

    assert key("image/jpeg") == "img-7.jpg"
    assert key("image/png") == "img-7.png"
    assert key("image/webp") == "img-7.webp"
    assert key("image/tiff") == "img-7.tiff"
    assert key("application/x-unknown", "photo.heic") == "img-7.heic"


def test_claude_docker_without_credentials_or_key_is_unavailable(tmp_path):
    backend = get_backend("claude-docker", credentials_dir=tmp_path, api_key="")

    with pytest.raises(BackendUnavailable, match=r"No Claude credentials: .*\.credentials\.json does not exist"):
        backend.check()


def test_claude_docker_without_an_engine_is_unavailable(tmp_path, monkeypatch):
    (tmp_path / ".credentials.json").write_text("{}")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    backend = get_backend("claude-docker", credentials_dir=tmp_path)
    image = ImageInput(id=1, path=tmp_path / "a.png", mime="image/png", width=1, height=1)

    with pytest.raises(BackendUnavailable, match=r"No container engine is reachable at unix://.*no-engine\.sock"):
        backend.label_batch([image], should_stop=lambda: False)


def test_anthropic_without_a_key_is_unavailable():
    with pytest.raises(BackendUnavailable, match="needs an API key: set ANTHROPIC_API_KEY"):
        get_backend("anthropic", api_key="").check()
