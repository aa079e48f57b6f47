import io

from django.core.management import call_command

from gallery import services
from gallery.models import Image
from imagineer.models import MaintenanceRun
from imagineer.testing import image_bytes, stored_files


def test_check_storage_reports_and_fixes_orphans_and_missing_files(user, ingest, media_root):
    kept = ingest(user, seed=1)
    lost = ingest(user, seed=2)
    thumbless = ingest(user, seed=3)
    for image in (kept, lost, thumbless):
        services.image_make_derivatives(image=image)
        image.refresh_from_db()
    orphan = media_root / "originals" / "ff" / "ee" / ("f" * 64 + ".jpg")
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(image_bytes(seed=9))
    (media_root / lost.file.name).unlink()
    (media_root / thumbless.thumbnail.name).unlink()

    out = io.StringIO()
    call_command("check_storage", stdout=out)
    report = out.getvalue()
    assert f"orphan file: originals/ff/ee/{'f' * 64}.jpg" in report
    assert f"image {lost.pk}: original missing" in report
    assert f"image {thumbless.pk}: thumbnail or preview missing" in report
    assert "orphan files 1, missing originals 1, missing thumbnails 1" in report
    assert orphan.exists()  # reporting changes nothing

    call_command("check_storage", "--fix", stdout=io.StringIO())
    assert not orphan.exists()
    assert (media_root / thumbless.thumbnail.name).exists()
    lost.refresh_from_db()
    assert lost.is_trashed
    out = io.StringIO()
    call_command("check_storage", stdout=out)
    assert "orphan files 0, missing originals 1, missing thumbnails 0" in out.getvalue()  # trashed, still listed
    assert MaintenanceRun.objects.filter(name="check_storage").count() == 3
    assert kept.file.name in stored_files(media_root)
    assert Image.objects.count() == 3
