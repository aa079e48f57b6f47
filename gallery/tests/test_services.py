import io
from datetime import timedelta

import pytest
from django.utils import timezone
from PIL import Image as PILImage

from gallery import services
from gallery.models import Album, AlbumImage, DerivativeStatus, Image
from gallery.selectors import duplicate_groups, similar_images
from gallery.tests.conftest import image_bytes, stored_files


def test_ingest_records_everything_and_stores_under_a_content_address(user, ingest, media_root):
    data = image_bytes("PNG", size=(80, 60), seed=5)
    image = ingest(user, data, filename="cat.png", source="upload")
    assert (image.width, image.height, image.format, image.mime, image.bytes) == (80, 60, "PNG", "image/png", len(data))
    assert image.file.name == f"originals/{image.sha256[:2]}/{image.sha256[2:4]}/{image.sha256}.png"
    assert (media_root / image.file.name).read_bytes() == data
    assert image.original_filename == "cat.png"
    assert image.derivatives == DerivativeStatus.PENDING
    assert not image.is_public


def test_the_same_bytes_again_return_the_existing_image_without_a_copy(user, ingest, media_root):
    data = image_bytes(seed=2)
    first = ingest(user, data)
    result = services.image_ingest(owner=user, data=data, filename="again.jpg")
    assert result.duplicate and result.image.pk == first.pk
    assert Image.objects.count() == 1
    assert len(stored_files(media_root)) == 1


def test_another_owner_gets_their_own_row_sharing_the_file(user, other_user, ingest, media_root):
    data = image_bytes(seed=2)
    a, b = ingest(user, data), ingest(other_user, data)
    assert a.pk != b.pk and a.file.name == b.file.name
    assert len(stored_files(media_root)) == 1


def test_uploading_a_trashed_image_again_restores_it(user, ingest):
    data = image_bytes(seed=4)
    image = ingest(user, data)
    services.images_trash(user=user, ids=[image.pk])
    again = services.image_ingest(owner=user, data=data)
    assert again.image.pk == image.pk and again.image.trashed_at is None


def test_a_storage_failure_is_a_clear_error_and_leaves_no_row(user, settings, tmp_path):
    blocked = tmp_path / "readonly"
    blocked.mkdir()
    (blocked / "originals").write_text("a file where a folder must go")
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": blocked}}}
    with pytest.raises(services.StorageFailed, match="could not be stored"):
        services.image_ingest(owner=user, data=image_bytes(seed=8))
    assert Image.objects.count() == 0


def test_a_database_failure_after_storing_removes_the_new_file(user, media_root, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(Image.objects, "create", explode)
    with pytest.raises(RuntimeError):
        services.image_ingest(owner=user, data=image_bytes(seed=9))
    assert stored_files(media_root) == []


def test_derivatives_are_made_by_a_worker_through_the_real_queue(user, run_worker, media_root):
    image = services.image_ingest(owner=user, data=image_bytes("JPEG", size=(1600, 1200), seed=3)).image
    run_worker("default")
    image.refresh_from_db()
    assert image.derivatives == DerivativeStatus.READY
    thumb = PILImage.open(media_root / image.thumbnail.name)
    preview = PILImage.open(media_root / image.preview.name)
    assert thumb.format == preview.format == "WEBP"
    assert thumb.size == (300, 225) and preview.size == (1280, 960)


def test_a_broken_original_marks_derivatives_failed_not_the_worker(user, ingest, media_root):
    image = ingest(user)
    (media_root / image.file.name).write_bytes(b"corrupted later")
    services.image_make_derivatives(image=image)
    image.refresh_from_db()
    assert image.derivatives == DerivativeStatus.FAILED


def _near_copy(data: bytes) -> bytes:
    out = io.BytesIO()
    PILImage.open(io.BytesIO(data)).resize((150, 100)).save(out, format="JPEG", quality=60)
    return out.getvalue()


def test_near_duplicates_are_found_and_distinct_pictures_are_not(user, ingest):
    base_data = image_bytes("PNG", size=(300, 200), seed=11)
    base = ingest(user, base_data, filename="a.png")
    near = ingest(user, _near_copy(base_data), filename="b.jpg")
    far = ingest(user, image_bytes("PNG", size=(300, 200), seed=77), filename="c.png")
    similar = [img.pk for img, _ in similar_images(base, user=user)]
    assert near.pk in similar and far.pk not in similar
    groups = duplicate_groups(owner=user)
    assert [sorted(i.pk for i in g) for g in groups] == [sorted([base.pk, near.pk])]


def test_similar_images_never_show_another_users_private_images(user, other_user, ingest):
    data = image_bytes("PNG", size=(300, 200), seed=11)
    mine = ingest(user, data)
    theirs = ingest(other_user, _near_copy(data))
    assert similar_images(mine, user=user) == []
    assert similar_images(theirs, user=user) == []


def test_trash_restore_and_purge(user, other_user, ingest, media_root):
    shared = image_bytes(seed=21)
    image = ingest(user, image_bytes(seed=20))
    mine_shared = ingest(user, shared)
    ingest(other_user, shared)
    services.image_make_derivatives(image=image)
    assert services.images_trash(user=user, ids=[image.pk, mine_shared.pk]) == 2
    assert services.images_restore(user=user, ids=[mine_shared.pk]) == 1
    services.images_trash(user=user, ids=[mine_shared.pk])
    # Not old enough yet: nothing is purged.
    assert services.trash_purge()["images"] == 0
    Image.objects.filter(pk__in=[image.pk, mine_shared.pk]).update(trashed_at=timezone.now() - timedelta(days=31))
    counts = services.trash_purge()
    assert counts["images"] == 2
    assert not Image.objects.filter(pk__in=[image.pk, mine_shared.pk]).exists()
    files = stored_files(media_root)
    assert image.file.name not in files and image.thumbnail.name not in files
    assert mine_shared.file.name in files  # still used by the other user's image


def test_trash_is_limited_to_the_users_own_images(user, other_user, ingest):
    theirs = ingest(other_user)
    assert services.images_trash(user=user, ids=[theirs.pk]) == 0
    theirs.refresh_from_db()
    assert theirs.trashed_at is None


def test_albums_add_remove_reorder_cover_and_delete_keeps_images(user, ingest):
    album = services.album_create(owner=user, name="Cats & Dogs")
    assert album.slug == "cats-dogs"
    images = [ingest(user, seed=s) for s in range(4)]
    assert services.album_add_images(album=album, images=images) == 4
    assert services.album_add_images(album=album, images=images[:2]) == 0  # already there
    assert list(album.ordered_images()) == images
    services.album_reorder(album=album, ordered_ids=[images[3].pk, images[1].pk])
    assert list(album.ordered_images()) == [images[3], images[1], images[0], images[2]]
    assert album.cover_image(user) == images[3]
    services.album_set_cover(album=album, image=images[2])
    assert album.cover_image(user) == images[2]
    services.album_remove_images(album=album, ids=[images[2].pk])
    album.refresh_from_db()
    assert album.cover is None and album.ordered_images().count() == 3
    with pytest.raises(ValueError):
        services.album_set_cover(album=album, image=images[2])
    other = services.album_create(owner=user, name="Also cats")
    services.album_add_images(album=other, images=images[:1])
    services.album_delete(album=album)
    assert Image.objects.count() == 4 and AlbumImage.objects.filter(album=other).count() == 1


def test_album_names_are_unique_per_owner(user, other_user):
    services.album_create(owner=user, name="Portraits")
    with pytest.raises(services.AlbumNameTaken):
        services.album_create(owner=user, name="Portraits")
    assert services.album_create(owner=other_user, name="Portraits").slug == "portraits"
    assert Album.objects.count() == 2


def test_trashed_images_leave_album_counts(user, ingest):
    album = services.album_create(owner=user, name="A")
    images = [ingest(user, seed=s) for s in range(3)]
    services.album_add_images(album=album, images=images)
    services.images_trash(user=user, ids=[images[0].pk])
    assert Album.objects.with_counts(user).get(pk=album.pk).image_count == 2
