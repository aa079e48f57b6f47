import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from gallery import services as gallery_services
from imagineer.testing import image_bytes
from labeling import services
from labeling.models import Label, LabelingJob

pytestmark = pytest.mark.usefixtures("media_root")


@pytest.fixture
def album(user, ingest):
    album = gallery_services.album_create(owner=user, name="Cmd")
    gallery_services.album_add_images(album=album, images=[ingest(user, image_bytes("PNG", seed=s),
                                                                   filename=f"{s}.png") for s in range(2)])
    return album


def test_label_images_inline_with_the_local_backend(album, transactional_db):
    out = io.StringIO()
    call_command("label_images", "--album", "Cmd", "--backend", "local", "--inline", stdout=out)
    assert "Labelled 2, skipped 0, failed 0" in out.getvalue()
    assert Label.objects.filter(source="local").exists()


def test_label_images_wait_runs_through_a_worker(album, user, run_worker):
    import threading
    import time

    out = io.StringIO()
    ids = [str(i.pk) for i in album.ordered_images()]
    # The command waits in a thread; the worker needs the main thread (it installs signal handlers).
    command = threading.Thread(target=call_command, args=("label_images", "--image", *ids, "--backend", "local",
                                                          "--wait", "--no-progress"), kwargs={"stdout": out})
    command.start()
    deadline = time.monotonic() + 30
    while not LabelingJob.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    run_worker("label")
    command.join(timeout=60)
    assert not command.is_alive()
    assert "Labelled 2" in out.getvalue()


def test_label_images_exits_non_zero_when_the_job_failed(album, settings, transactional_db):
    settings.ANTHROPIC_API_KEY = ""
    with pytest.raises(CommandError, match="failed"):
        call_command("label_images", "--album", "Cmd", "--backend", "anthropic", "--inline", stdout=io.StringIO())
    assert LabelingJob.objects.get().status == "failed"


def test_label_images_refuses_unknown_albums(db):
    with pytest.raises(CommandError, match="No album named"):
        call_command("label_images", "--album", "Nope", "--inline")


def test_export_dataset_writes_kohya_and_jsonl(album, user, tmp_path):
    first = album.ordered_images().first()
    services.caption_set(image=first, user=user, text="first")
    out = io.StringIO()
    call_command("export_dataset", "--album", "Cmd", "--format", "kohya", str(tmp_path / "k"), stdout=out)
    assert "exported 2 image(s)" in out.getvalue()
    assert (tmp_path / "k" / "1_cmd" / "00001.txt").read_text() == "first\n"
    assert (tmp_path / "k" / "1_cmd" / "00002.txt").read_text() == "Cmd\n"
    call_command("export_dataset", "--album", "Cmd", "--format", "jsonl", str(tmp_path / "j"), stdout=out)
    lines = (tmp_path / "j" / "metadata.jsonl").read_text().splitlines()
    first_line = json.loads(lines[0])
    assert (first_line["file_name"], first_line["text"]) == ("00001.png", "first")
