import pytest


@pytest.mark.django_db
def test_healthz_reports_ok_with_database_redis_and_worker_count(client, redis_conn):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["database"] == "ok"
    assert body["redis"] == "ok"
    assert isinstance(body["workers"], int)


@pytest.mark.django_db
def test_healthz_says_503_and_names_redis_when_it_is_down(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"database": "ok", "redis": "down", "workers": 0}


@pytest.mark.django_db
def test_healthz_says_503_when_the_database_is_down(client, monkeypatch):
    from django.db import connection

    def refuse(*args, **kwargs):
        from django.db import OperationalError

        raise OperationalError("connection refused")

    monkeypatch.setattr(connection, "cursor", refuse)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["database"] == "down"
    assert b"Traceback" not in response.content
