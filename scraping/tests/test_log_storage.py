"""The crawl log is an artifact: the worker writes it on its own disk and uploads it; the web reads storage.

The web and the worker are different machines here: each has its own WORK_DIR, media live in a folder of
their own, and the only thing they share is the artifacts storage (a folder standing in for the store, or
moto's S3 server). The worker's disk is wiped before the web asks for the log.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.db import models

from imagineer.artifacts import artifact_exists, artifact_storage
from imagineer.models import JobStatus
from scraping.models import ScrapeJob
from scraping.services import scrape_job_start
from scraping.tests.conftest import JOB_OPTIONS

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("scrape_settings", "no_real_dns")]


def _crawl_as_the_worker(user, site, settings, worker_dir: Path, **options) -> ScrapeJob:
    settings.WORK_DIR = worker_dir / "work"
    return scrape_job_start(user=user, start_url=site.url("/gallery/b.html"), album_name="Crawled",
                            **{**JOB_OPTIONS, "depth": 0, **options})


def _no_paths_in_the_row(job: ScrapeJob, *roots: Path) -> None:
    for field in ScrapeJob._meta.concrete_fields:
        if isinstance(field, (models.CharField, models.TextField)):
            value = getattr(job, field.attname) or ""
            assert not any(str(root) in value for root in roots), (field.name, value)
            assert not value.startswith("/"), (field.name, value)


def test_the_web_shows_the_log_a_worker_on_another_machine_wrote(
    user, user_client, other_client, test_site, run_worker, label_hook, settings, tmp_path, media_root,
    artifacts_root,
):
    worker, web = tmp_path / "worker-machine", tmp_path / "web-machine"
    settings.ARTIFACT_LOG_UPLOAD_SECONDS = 0.2
    job = _crawl_as_the_worker(user, test_site, settings, worker, delay=0.3, concurrency=1)
    url = f"/scrapes/jobs/{job.pk}/log.txt"
    during = []

    def look_while_it_crawls(*, image, alt, title):
        response = user_client.get(url)
        body = b"".join(response.streaming_content) if response.status_code == 200 else b""
        during.append((ScrapeJob.objects.get(pk=job.pk).status, response.status_code, body))

    label_hook(look_while_it_crawls)
    run_worker("scrape")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    # The log was readable on the web while the crawl was still running.
    assert any(status == JobStatus.RUNNING and code == 200 and b"Spider opened" in body
               for status, code, body in during), [(s, c, body[-200:]) for s, c, body in during]

    assert job.log_key == f"scrapes/{job.pk}/log.txt"
    _no_paths_in_the_row(job, tmp_path)
    # The web machine: its own work dir, nothing of the worker's disk.
    shutil.rmtree(worker)
    settings.WORK_DIR = web / "work"
    response = user_client.get(url)
    assert response.status_code == 200 and response["Content-Disposition"].startswith("attachment")
    log = b"".join(response.streaming_content)
    assert b"Spider opened" in log and b"Spider closed (finished)" in log
    assert other_client.get(url).status_code == 404
    assert (artifacts_root / "scrapes" / str(job.pk) / "log.txt").read_bytes() == log
    assert not (media_root / "scrapes").exists()  # artifacts are not media

    job.delete()
    assert not artifact_exists(f"scrapes/{job.pk}/log.txt")
    assert not (artifacts_root / "scrapes" / str(job.pk) / "log.txt").exists()


def test_the_log_goes_through_s3(s3_endpoint, user, user_client, other_client, test_site, run_worker, settings,
                                 tmp_path):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="k", aws_secret_access_key="s",
                      region_name="us-east-1")
    s3.create_bucket(Bucket="media")
    # As imagineer/settings/base.py makes it when IMAGINEER_S3_BUCKET is set.
    settings.STORAGES = {**settings.STORAGES, "artifacts": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": "media", "endpoint_url": s3_endpoint, "access_key": "k", "secret_key": "s",
        "region_name": "us-east-1", "default_acl": "private", "querystring_auth": True,
        "location": "artifacts", "file_overwrite": True}}}
    settings.ARTIFACT_LOG_UPLOAD_SECONDS = 0.2
    job = _crawl_as_the_worker(user, test_site, settings, tmp_path / "worker-machine", delay=0.3)
    run_worker("scrape")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    object_key = f"artifacts/scrapes/{job.pk}/log.txt"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="media")["Contents"]] == [object_key]
    stored = s3.get_object(Bucket="media", Key=object_key)["Body"].read()
    assert b"Spider closed (finished)" in stored

    settings.WORK_DIR = tmp_path / "web-machine" / "work"
    response = user_client.get(f"/scrapes/jobs/{job.pk}/log.txt")
    assert response.status_code == 200 and b"".join(response.streaming_content) == stored
    assert other_client.get(f"/scrapes/jobs/{job.pk}/log.txt").status_code == 404
    assert artifact_storage().exists(job.log_key)

    job.delete()
    assert s3.list_objects_v2(Bucket="media").get("KeyCount") == 0
