"""Artifacts in storage (folders, downloads) and the worker's bounded local cache keyed by content hash."""

import hashlib
import threading

import pytest
import requests
from django.http import Http404

from imagineer.artifacts import (
    ArtifactCache,
    artifact_delete_prefix,
    artifact_download_tree,
    artifact_list,
    artifact_response,
    artifact_save,
    artifact_upload_tree,
    cached_artifact,
)


def _tree(folder, files):
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


FILES = {"state.json": b"{}", "a.bin": b"A" * 10, "sub/b.bin": b"B" * 20}


def test_a_folder_goes_up_and_comes_down_on_another_machine(artifacts_root, tmp_path):
    source = _tree(tmp_path / "worker1", FILES)
    keys = artifact_upload_tree(source, "runs/7/checkpoints/step-000010", last="state.json")
    assert keys[-1].endswith("state.json")  # the completion marker goes last
    assert artifact_list("runs/7/checkpoints") == sorted(keys)
    written = artifact_download_tree("runs/7/checkpoints/step-000010", tmp_path / "worker2")
    assert {p.relative_to(tmp_path / "worker2").as_posix(): p.read_bytes() for p in written} == FILES
    assert artifact_delete_prefix("runs/7") == 3 and artifact_list("runs/7") == []


def test_the_same_on_s3(s3_endpoint, settings, tmp_path):
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="k", aws_secret_access_key="s",
                 region_name="us-east-1").create_bucket(Bucket="arts")
    settings.STORAGES = {**settings.STORAGES, "artifacts": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": "arts", "endpoint_url": s3_endpoint, "access_key": "k", "secret_key": "s",
        "region_name": "us-east-1", "location": "artifacts", "file_overwrite": True}}}
    artifact_upload_tree(_tree(tmp_path / "up", FILES), "models/x", last="state.json")
    written = artifact_download_tree("models/x", tmp_path / "down")
    assert sorted(p.read_bytes() for p in written) == sorted(FILES.values())
    settings.ARTIFACT_DOWNLOADS = "redirect"
    response = artifact_response("models/x/a.bin", filename="a.bin")
    assert response.status_code == 302 and "Signature=" in response["Location"] and "Expires=" in response["Location"]
    fetched = requests.get(response["Location"], timeout=10)  # what the browser does with the short-lived URL
    assert fetched.status_code == 200 and fetched.content == b"A" * 10
    settings.ARTIFACT_DOWNLOADS = "stream"
    streamed = artifact_response("models/x/a.bin", filename="a.bin")
    assert b"".join(streamed.streaming_content) == b"A" * 10
    assert 'attachment; filename="a.bin"' in streamed["Content-Disposition"]


def test_a_download_of_a_key_that_is_not_stored_is_a_404(artifacts_root):
    with pytest.raises(Http404):
        artifact_response("runs/1/nothing.safetensors", filename="x")
    with pytest.raises(Http404):
        artifact_response("", filename="x")


def test_two_jobs_wanting_the_same_file_download_it_once(artifacts_root, settings, tmp_path):
    data = b"lora weights" * 1000
    digest = hashlib.sha256(data).hexdigest()
    artifact_save("runs/1/lora/x.safetensors", data)
    settings.ARTIFACT_CACHE_DIR = tmp_path / "cache"
    fills = []
    cache = ArtifactCache(tmp_path / "cache", 10**9)
    real_use = cache.use

    results = []

    def job():
        def fill(folder):
            fills.append(1)
            (folder / "x.safetensors").write_bytes(data)

        with real_use(digest, fill) as folder:
            results.append((folder / "x.safetensors").read_bytes())

    threads = [threading.Thread(target=job) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fills == [1] and results == [data] * 4
    # The storage-backed helper checks the hash of what it downloaded.
    with cached_artifact("runs/1/lora/x.safetensors", digest) as path:
        assert path.read_bytes() == data
    with pytest.raises(ValueError, match="not"):
        with cached_artifact("runs/1/lora/x.safetensors", "0" * 64):
            pass
    assert not (tmp_path / "cache" / ("0" * 64)).exists()  # a bad download leaves nothing behind


def test_the_cache_stays_under_its_size_but_never_removes_what_a_job_holds(tmp_path):
    cache = ArtifactCache(tmp_path / "cache", max_bytes=250)

    def filler(n):
        return lambda folder: (folder / "f").write_bytes(b"x" * n)

    with cache.use("a" * 64, filler(100)):
        with cache.use("b" * 64, filler(100)):
            pass
        with cache.use("c" * 64, filler(100)):  # 300 bytes: b, the least recently used free entry, goes
            pass
        names = {p.name[:1] for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")}
        assert names == {"a", "c"}  # a is held by this job and stays even though it is the oldest
    with cache.use("d" * 64, filler(100)):
        pass
    names = {p.name[:1] for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")}
    assert names == {"c", "d"}
    with pytest.raises(ValueError, match="content hash"):
        with cache.use("../etc", filler(1)):
            pass
