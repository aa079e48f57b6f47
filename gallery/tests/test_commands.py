import io
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from gallery.models import Album, DerivativeStatus, Image
from gallery.tests.conftest import image_bytes, stored_files
from imagineer.models import MaintenanceRun

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "photos"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.jpg").write_bytes(image_bytes("JPEG", seed=1))
    (root / "b.png").write_bytes(image_bytes("PNG", seed=2))
    (root / "copy-of-a.jpg").write_bytes(image_bytes("JPEG", seed=1))
    (root / "notes.txt").write_text("not an image")
    (root / "empty.gif").write_bytes(b"")
    (root / ".hidden.jpg").write_bytes(image_bytes("JPEG", seed=9))
    (root / "sub" / "c.webp").write_bytes(image_bytes("WEBP", seed=3))
    (root / "sub" / "deeper" / "d.gif").write_bytes(image_bytes("GIF", seed=4))
    return root


def _index(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("index_images", *args, "--no-progress", stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_index_imports_a_tree_reports_rejections_and_is_idempotent(user, tree, media_root):
    out, err = _index(str(tree), "--owner", user.username, "--recursive", "--album", "Holiday", "--public")
    assert out.strip().endswith("imported 4, duplicates 1, rejected 2")
    assert f"rejected {tree / 'notes.txt'}: This is not an image" in err
    assert f"rejected {tree / 'empty.gif'}: The file is empty" in err
    images = Image.objects.filter(owner=user)
    assert images.count() == 4
    assert all(i.source == "index" and i.is_public and i.derivatives == DerivativeStatus.READY for i in images)
    assert images.filter(source_detail__path=str(tree / "sub" / "c.webp")).exists()
    assert Album.objects.get(owner=user, name="Holiday").ordered_images().count() == 4
    files_before = stored_files(media_root)
    out, _ = _index(str(tree), "--owner", user.username, "--recursive", "--album", "Holiday")
    assert out.strip().endswith("imported 0, duplicates 5, rejected 2")
    assert Image.objects.count() == 4 and stored_files(media_root) == files_before
    runs = MaintenanceRun.objects.filter(name="index_images").order_by("started_at")
    assert [r.counts for r in runs] == [
        {"imported": 4, "duplicates": 1, "rejected": 2}, {"imported": 0, "duplicates": 5, "rejected": 2}]
    assert runs[0].arguments["paths"] == [str(tree)] and runs[0].outcome == "succeeded"


def test_index_without_recursive_stays_at_the_top_level(user, tree):
    out, _ = _index(str(tree), "--owner", user.username)
    assert out.strip().endswith("imported 2, duplicates 1, rejected 2")


def test_index_with_two_workers_gives_the_same_result(user, tree):
    out, _ = _index(str(tree), "--owner", user.username, "--recursive", "--workers", "2")
    assert out.strip().endswith("imported 4, duplicates 1, rejected 2")


def test_index_that_cannot_run_fails_with_a_reason(user, tmp_path):
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        _index(str(tmp_path), "--owner", "ghost")
    with pytest.raises(CommandError, match="No such file or directory"):
        _index(str(tmp_path / "missing"), "--owner", user.username)
    failed = MaintenanceRun.objects.filter(name="index_images", outcome="failed")
    assert failed.count() == 2


def test_index_exit_status_is_0_when_it_ran_and_1_when_it_could_not(tmp_path, tree):
    env_db = tmp_path / "db"
    env = {"DJANGO_SETTINGS_MODULE": "imagineer.settings.test", "IMAGINEER_DATA_DIR": str(env_db),
           "PATH": "/usr/bin:/bin"}

    def manage(*args):
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=180)

    assert manage("migrate", "--verbosity", "0").returncode == 0
    script = ("from django.contrib.auth import get_user_model as g; "
              "g().objects.create_user('indexer', 'i@example.com', 'x')")
    assert manage("shell", "-c", script).returncode == 0
    ran = manage("index_images", str(tree), "--owner", "indexer", "--no-progress")
    assert ran.returncode == 0, ran.stderr
    assert "imported 2, duplicates 1, rejected 2" in ran.stdout
    failed = manage("index_images", str(tree), "--owner", "nobody")
    assert failed.returncode == 1 and "No user named 'nobody'" in failed.stderr


def test_purge_trash_deletes_old_trash_for_good_and_records_the_run(user, ingest, media_root):
    old, recent = ingest(user, seed=1), ingest(user, seed=2)
    Image.objects.filter(pk=old.pk).update(trashed_at=timezone.now() - timedelta(days=40))
    Image.objects.filter(pk=recent.pk).update(trashed_at=timezone.now() - timedelta(days=1))
    out = io.StringIO()
    call_command("purge_trash", stdout=out)
    assert "purged 1 image(s), deleted 1 file(s)" in out.getvalue()
    assert list(Image.objects.values_list("pk", flat=True)) == [recent.pk]
    assert old.file.name not in stored_files(media_root)
    assert MaintenanceRun.objects.get(name="purge_trash").counts == {"images": 1, "files": 1}
    call_command("purge_trash", "--days", "0", stdout=out)
    assert Image.objects.count() == 0 and stored_files(media_root) == []


def test_make_thumbnails_fills_in_pending_ones(user, ingest):
    image = ingest(user)
    assert image.derivatives == DerivativeStatus.PENDING
    out = io.StringIO()
    call_command("make_thumbnails", stdout=out)
    image.refresh_from_db()
    assert image.derivatives == DerivativeStatus.READY and "made 1, failed 0" in out.getvalue()
