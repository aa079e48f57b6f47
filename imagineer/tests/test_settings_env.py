import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from imagineer.settings.env import (
    check_redis_url,
    env_bool,
    env_choice,
    env_dict,
    env_int,
    env_list,
    parse_database_url,
)

ROOT = Path(__file__).resolve().parents[2]


def test_it_reads_booleans_and_rejects_nonsense(monkeypatch):
    monkeypatch.setenv("X_FLAG", "yes")
    assert env_bool("X_FLAG") is True
    monkeypatch.setenv("X_FLAG", "0")
    assert env_bool("X_FLAG", True) is False
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG='maybe' is not a boolean"):
        env_bool("X_FLAG")


def test_it_rejects_bad_and_out_of_range_integers(monkeypatch):
    monkeypatch.setenv("X_NUM", "12")
    assert env_int("X_NUM", 1) == 12
    monkeypatch.setenv("X_NUM", "twelve")
    with pytest.raises(ImproperlyConfigured, match="not a whole number"):
        env_int("X_NUM", 1)
    monkeypatch.setenv("X_NUM", "0")
    with pytest.raises(ImproperlyConfigured, match="below the minimum of 1"):
        env_int("X_NUM", 5, minimum=1)


def test_it_splits_lists_and_checks_choices(monkeypatch):
    monkeypatch.setenv("X_LIST", " a.example, ,b.example ")
    assert env_list("X_LIST") == ["a.example", "b.example"]
    monkeypatch.setenv("X_CHOICE", "loud")
    with pytest.raises(ImproperlyConfigured, match="not one of: json, text"):
        env_choice("X_CHOICE", "text", {"text", "json"})


def test_it_reads_key_value_pairs(monkeypatch):
    monkeypatch.delenv("X_ENV", raising=False)
    assert env_dict("X_ENV") == {}
    monkeypatch.setenv("X_ENV", " HTTPS_PROXY=http://proxy:3128 , ,EMPTY=,Q=a=b,NO_PROXY=localhost\\,127.0.0.1")
    assert env_dict("X_ENV") == {
        "HTTPS_PROXY": "http://proxy:3128", "EMPTY": "", "Q": "a=b", "NO_PROXY": "localhost,127.0.0.1",
    }


@pytest.mark.parametrize("raw, message", [
    ("A=1,B", "the entry 'B' is not KEY=VALUE"),
    ("=1", "the entry '=1' is not KEY=VALUE"),
    ("1A=x", "the entry '1A=x' is not KEY=VALUE"),
    ("MY KEY=x", "the entry 'MY KEY=x' is not KEY=VALUE"),
    ("A=1,A=2", "A is given twice"),
])
def test_it_rejects_malformed_key_value_pairs_naming_the_variable(monkeypatch, raw, message):
    monkeypatch.setenv("X_ENV", raw)
    with pytest.raises(ImproperlyConfigured, match=f"^X_ENV: {message}"):
        env_dict("X_ENV")


def test_it_stops_start_up_on_a_malformed_label_env(tmp_path):
    result = _load_settings({"DEBUG": "1", "IMAGINEER_DATA_DIR": str(tmp_path), "IMAGINEER_LABEL_ENV": "PROXY"})
    assert result.returncode != 0
    assert "IMAGINEER_LABEL_ENV: the entry 'PROXY' is not KEY=VALUE" in result.stderr


def test_it_parses_postgres_and_sqlite_urls():
    db = parse_database_url("postgres://postgres:s%40cret@127.0.0.1:5432/test?sslmode=disable")
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "test", "postgres", "s@cret", "127.0.0.1", "5432"
    )
    assert db["OPTIONS"] == {"sslmode": "disable"}
    assert parse_database_url("sqlite:////tmp/x.sqlite3")["NAME"] == "/tmp/x.sqlite3"
    # Workers in other processes share it: they must wait for the write lock, not fail (see env.SQLITE_OPTIONS).
    assert parse_database_url("sqlite:////tmp/x.sqlite3")["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


@pytest.mark.parametrize(
    "url, message",
    [
        ("mysql://root@localhost/db", "unsupported scheme 'mysql'"),
        ("postgres://postgres@localhost:5432/", "names no database"),
        ("postgres://postgres@localhost:port/db", "port that is not a number"),
    ],
)
def test_it_rejects_bad_database_urls(url, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        parse_database_url(url)


def test_it_rejects_bad_redis_urls():
    assert check_redis_url("redis://127.0.0.1:6379/0")
    with pytest.raises(ImproperlyConfigured, match="must start with redis://"):
        check_redis_url("http://127.0.0.1:6379")


def _settings_env(env: dict) -> dict:
    skip = ("DJANGO_", "IMAGINEER_", "DEBUG", "SECRET", "DATABASE_URL", "SENTRY_")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(skip)}, **env}


def _load_settings(env: dict, show: str = "s.DATABASES['default']['ENGINE']") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", f"import imagineer.settings.base as s; print({show})"],
        cwd=ROOT, env=_settings_env(env), capture_output=True, text=True, timeout=60,
    )


def test_debug_without_secret_key_makes_one_key_that_every_process_and_restart_shares(tmp_path):
    env = _settings_env({"DEBUG": "1", "IMAGINEER_DATA_DIR": str(tmp_path)})
    code = "import imagineer.settings.base as s; print(s.SECRET_KEY)"
    # Four processes starting at once (gunicorn workers, RQ workers) race to create the key: one wins.
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    keys = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert len(keys) == 1 and len(keys.pop()) > 50
    key_file = tmp_path / "secret_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    first = key_file.read_text().strip()
    # A restart reads the same key, so sessions survive it.
    assert _load_settings({"DEBUG": "1", "IMAGINEER_DATA_DIR": str(tmp_path)}, "s.SECRET_KEY").stdout.strip() == first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".secret_key-")]  # no temp files left
    # An explicit SECRET_KEY wins over the file.
    assert _load_settings({"DEBUG": "1", "IMAGINEER_DATA_DIR": str(tmp_path), "SECRET_KEY": "given-key"},
                          "s.SECRET_KEY").stdout.strip() == "given-key"


def test_it_refuses_to_start_without_secret_key_when_debug_is_off(tmp_path):
    result = _load_settings({"DEBUG": "0", "IMAGINEER_DATA_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_it_names_the_variable_with_a_bad_value(tmp_path):
    result = _load_settings({"DEBUG": "1", "IMAGINEER_DATA_DIR": str(tmp_path), "IMAGINEER_JOB_STALE_AFTER": "soon"})
    assert result.returncode != 0
    assert "IMAGINEER_JOB_STALE_AFTER='soon' is not a whole number" in result.stderr


def test_it_defaults_to_sqlite_and_selects_postgres_from_database_url(tmp_path):
    sqlite = _load_settings({"DEBUG": "1", "IMAGINEER_DATA_DIR": str(tmp_path)})
    assert sqlite.stdout.strip() == "django.db.backends.sqlite3", sqlite.stderr
    pg = _load_settings({"DEBUG": "1", "IMAGINEER_DATA_DIR": str(tmp_path), "DATABASE_URL": "postgres://u@h/db"})
    assert pg.stdout.strip() == "django.db.backends.postgresql", pg.stderr


def test_job_artifacts_follow_the_media_store(tmp_path):
    show = "__import__('json').dumps(s.STORAGES['artifacts'], default=str)"
    local = _load_settings({"DEBUG": "1", "IMAGINEER_DATA_DIR": str(tmp_path)}, show)
    assert json.loads(local.stdout) == {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {
        "location": str(tmp_path / "artifacts"), "allow_overwrite": True,
        "file_permissions_mode": 0o640, "directory_permissions_mode": 0o750}}, local.stderr
    s3 = _load_settings({"DEBUG": "1", "IMAGINEER_DATA_DIR": str(tmp_path), "IMAGINEER_S3_BUCKET": "media",
                         "IMAGINEER_S3_ENDPOINT_URL": "http://127.0.0.1:9000"}, show)
    storage = json.loads(s3.stdout)
    assert storage["BACKEND"] == "storages.backends.s3.S3Storage", s3.stderr
    # The media bucket, under its own prefix, private, and overwritten in place as a job uploads again.
    assert {k: storage["OPTIONS"][k] for k in ("bucket_name", "endpoint_url", "location", "file_overwrite",
                                                "default_acl")} == {
        "bucket_name": "media", "endpoint_url": "http://127.0.0.1:9000", "location": "artifacts",
        "file_overwrite": True, "default_acl": "private"}
