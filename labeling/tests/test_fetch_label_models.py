"""manage.py fetch_label_models: a download from a stand-in hub on 127.0.0.1, the hub unreachable (a closed
port), a downloaded model that does not load, and models already there."""

import socket

import pytest
from django.core.management import CommandError, call_command

from labeling.testing.tiny_labelers import build_tiny_tagger


@pytest.fixture
def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture
def model_dirs(settings, tmp_path):
    settings.LABEL_TAGGER_DIR = tmp_path / "labelers" / "wd-tagger"
    settings.LABEL_CAPTIONER_DIR = tmp_path / "labelers" / "captioner"
    return settings


def test_an_unreachable_hub_is_a_clear_error_that_leaves_nothing_behind(model_dirs, closed_port, tmp_path):
    err = []
    with pytest.raises(CommandError, match="2 of 2 model"):
        call_command("fetch_label_models", endpoint=f"http://127.0.0.1:{closed_port}",
                     stderr=_Collect(err))
    text = "".join(err)
    assert "Could not download tagger model SmilingWolf/wd-swinv2-tagger-v3" in text
    assert "Could not download captioner model Salesforce/blip-image-captioning-base" in text
    assert f"copy the files into {model_dirs.LABEL_TAGGER_DIR} by hand" in text
    assert list((tmp_path / "labelers").iterdir()) == []  # no half-written or staging folders


def test_a_folder_that_holds_a_model_is_kept_without_contacting_the_hub(model_dirs, closed_port):
    build_tiny_tagger(model_dirs.LABEL_TAGGER_DIR)
    out = []
    call_command("fetch_label_models", "--tagger", endpoint=f"http://127.0.0.1:{closed_port}", stdout=_Collect(out))
    assert "already holds a model" in "".join(out)
    assert (model_dirs.LABEL_TAGGER_DIR / "model.onnx").is_file()


@pytest.fixture
def hub(tmp_path):
    from labeling.testing.hub_stub import StubHub

    served = tmp_path / "served"
    served.mkdir()
    stub = StubHub("SmilingWolf/wd-swinv2-tagger-v3", served).start()
    yield stub
    stub.stop()


def test_it_downloads_the_tagger_which_then_works(model_dirs, hub, monkeypatch, tmp_path):
    from labeling.backends import get_backend

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    build_tiny_tagger(hub.folder)
    (hub.folder / "README.md").write_text("not downloaded: not a model file")
    out = []
    call_command("fetch_label_models", "--tagger", endpoint=hub.url, stdout=_Collect(out))
    target = model_dirs.LABEL_TAGGER_DIR
    assert f"SmilingWolf/wd-swinv2-tagger-v3 -> {target}" in "".join(out)
    assert sorted(p.name for p in target.iterdir()) == ["model.onnx", "selected_tags.csv"]
    assert (target / "model.onnx").read_bytes() == (hub.folder / "model.onnx").read_bytes()
    get_backend("tagger").check()
    assert [p.name for p in target.parent.iterdir()] == ["wd-tagger"]  # no staging folder left


def test_a_download_that_does_not_load_keeps_the_old_folder(model_dirs, hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    build_tiny_tagger(hub.folder, extra_outputs=3)  # a tag list that does not match the model
    build_tiny_tagger(model_dirs.LABEL_TAGGER_DIR)
    before = (model_dirs.LABEL_TAGGER_DIR / "model.onnx").read_bytes()
    err = []
    with pytest.raises(CommandError):
        call_command("fetch_label_models", "--tagger", "--force", endpoint=hub.url, stderr=_Collect(err))
    assert "was downloaded but cannot be used" in "".join(err) and "do not belong together" in "".join(err)
    assert (model_dirs.LABEL_TAGGER_DIR / "model.onnx").read_bytes() == before
    assert [p.name for p in model_dirs.LABEL_TAGGER_DIR.parent.iterdir()] == ["wd-tagger"]


class _Collect:
    def __init__(self, sink):
        self.sink = sink

    def write(self, text):
        self.sink.append(text)

    def flush(self):
        pass
