"""Data migrations of the scraping app, run for real against the test database."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from imagineer.artifacts import artifact_storage
from scraping.models import ScrapeJob

BEFORE = [("scraping", "0001_initial")]
AFTER = [("scraping", "0002_scrapejob_log_key")]


@pytest.fixture
def migrate(transactional_db):
    """Migrate the scraping app to a target; the database is brought back to the latest state afterwards."""

    def run(target):
        executor = MigrationExecutor(connection)
        executor.migrate(target)
        return executor.loader.project_state(target).apps

    yield run
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_log_paths_become_keys_of_logs_uploaded_to_the_artifacts_storage(migrate, tmp_path, artifacts_root):
    old_apps = migrate(BEFORE)
    OldJob = old_apps.get_model("scraping", "ScrapeJob")
    owner = old_apps.get_model("auth", "User").objects.create(username="old", email="old@example.com")
    here = tmp_path / "logs" / "scrape-1.log"
    here.parent.mkdir()
    here.write_text("2026-11-21 INFO Spider opened\n")
    fields = {"owner_id": owner.pk, "start_url": "https://example.com/", "album_name": "x"}
    readable = OldJob.objects.create(log_file=str(here), **fields)
    elsewhere = OldJob.objects.create(log_file="/srv/other-machine/logs/scrape-2.log", **fields)
    never = OldJob.objects.create(**fields)

    migrate(AFTER)
    keys = dict(ScrapeJob.objects.values_list("pk", "log_key"))
    assert keys == {readable.pk: f"scrapes/{readable.pk}/log.txt", elsewhere.pk: "", never.pk: ""}
    with artifact_storage().open(keys[readable.pk]) as fh:
        assert fh.read() == b"2026-11-21 INFO Spider opened\n"
    assert here.exists()  # the old file is left where it was
