"""The training JSON API: contract, field errors, access, and a bounded schemathesis run over its schema."""

from __future__ import annotations

import pytest

from imagineer.jobs import get_queue
from imagineer.models import JobStatus
from imagineer.services import api_token_create
from training.models import TrainingRun
from training.runs import services

pytestmark = pytest.mark.usefixtures("media_root", "training_dirs")


@pytest.fixture
def token(user):
    return api_token_create(user=user, name="t")[1]


def _auth(token):
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def _post(client, url, token, body=None):
    return client.post(url, body or {}, content_type="application/json", **_auth(token))


def test_it_starts_a_run_and_reports_its_status(client, user, token, run_album, unloaded_model, redis_conn,
                                                django_capture_on_commit_callbacks):
    shapes, _ = run_album
    with django_capture_on_commit_callbacks(execute=True):
        response = _post(client, "/api/training/runs", token,
                         {"album_ids": [shapes.pk], "steps": 20, "rank": 4, "learning_rate": 0.001, "name": "API run"})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "queued" and body["name"] == "API run" and body["owner"] == "alice"
    assert (body["step"], body["total_steps"], body["loss"], body["rank"]) == (0, 20, None, 4)
    assert body["album_ids"] == [shapes.pk] and body["image_count"] == 4 and body["base_model"] == "tiny"
    assert get_queue("train").count == 1
    TrainingRun.objects.filter(pk=body["id"]).update(status=JobStatus.RUNNING, step=5, progress=0.25,
                                                     loss_history=[[5, 0.125]], message="Step 5 of 20")
    detail = client.get(f"/api/training/runs/{body['id']}", **_auth(token)).json()
    assert (detail["status"], detail["step"], detail["loss"], detail["progress"]) == ("running", 5, 0.125, 0.25)
    assert detail["loss_history"] == [[5, 0.125]] and detail["message"] == "Step 5 of 20"
    listing = client.get("/api/training/runs", **_auth(token)).json()
    assert listing["count"] == 1 and listing["items"][0]["id"] == body["id"]
    assert client.get("/api/training/runs?status=failed", **_auth(token)).json()["count"] == 0


def test_invalid_input_is_a_422_naming_each_field(client, user, other_user, token, run_album, make_run_album,
                                                  unloaded_model):
    shapes, _ = run_album
    theirs, _ = make_run_album(other_user, "Theirs")
    schema_errors = _post(client, "/api/training/runs", token,
                          {"album_ids": [shapes.pk], "steps": 0, "resolution": 100, "mixed_precision": "fp8"})
    assert schema_errors.status_code == 422
    fields = {e["loc"][-1] for e in schema_errors.json()["detail"]}
    assert {"steps", "resolution", "mixed_precision"} <= fields
    rules = _post(client, "/api/training/runs", token,
                  {"album_ids": [theirs.pk], "base_model": "nope", "sample_every": 10})
    assert rules.status_code == 422
    errors = {e["loc"][-1]: e["msg"] for e in rules.json()["detail"]}
    assert errors["album_ids"] == f"No album of yours with id {theirs.pk}."
    assert errors["base_model"] == "No base model named 'nope'."
    assert "sample prompt" in errors["sample_prompt"]
    assert _post(client, "/api/training/runs", token, {"album_ids": []}).status_code == 422
    assert TrainingRun.objects.count() == 0


def test_other_users_runs_are_404_and_anonymous_callers_401(client, user, other_user, make_run_album, unloaded_model):
    theirs, _ = make_run_album(other_user, "Theirs")
    run = services.run_create(owner=other_user, album_ids=[theirs.pk], params={}, enqueue=False)
    token = api_token_create(user=user, name="t")[1]
    assert client.get(f"/api/training/runs/{run.pk}", **_auth(token)).status_code == 404
    assert _post(client, f"/api/training/runs/{run.pk}/cancel", token).status_code == 404
    assert _post(client, f"/api/training/runs/{run.pk}/resume", token).status_code == 404
    assert client.get("/api/training/runs", **_auth(token)).json()["count"] == 0
    assert client.get("/api/training/runs").status_code == 401
    run.refresh_from_db()
    assert run.status == JobStatus.QUEUED


def test_cancel_and_resume_through_the_api(client, user, token, run_album, unloaded_model, redis_conn):
    shapes, _ = run_album
    run = services.run_create(owner=user, album_ids=[shapes.pk], params={}, enqueue=False)
    cancelled = _post(client, f"/api/training/runs/{run.pk}/cancel", token)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert _post(client, f"/api/training/runs/{run.pk}/cancel", token).status_code == 409
    resumed = _post(client, f"/api/training/runs/{run.pk}/resume", token)
    assert resumed.status_code == 200 and resumed.json()["status"] == "queued"
    again = _post(client, f"/api/training/runs/{run.pk}/resume", token)
    assert again.status_code == 409 and "Only a cancelled or failed run" in again.json()["detail"]


def test_loras_and_base_models_are_listed_by_visibility(client, user, other_user, token, make_run_album, unloaded_model,
                                                        tmp_path):
    theirs, _ = make_run_album(other_user, "Theirs")
    runs = [services.run_create(owner=other_user, album_ids=[theirs.pk], params={}, name=n, enqueue=False)
            for n in ("Open", "Closed")]
    loras = [services.lora_register(run=r, diffusers_file=tmp_path / "a", kohya_file=tmp_path / "b") for r in runs]
    type(loras[0]).objects.filter(pk=loras[0].pk).update(is_public=True)
    listing = client.get("/api/training/loras", **_auth(token)).json()
    assert [item["name"] for item in listing["items"]] == ["open"]
    assert client.get(f"/api/training/loras/{loras[0].pk}", **_auth(token)).json()["default_weight"] == 0.6
    assert client.get(f"/api/training/loras/{loras[1].pk}", **_auth(token)).status_code == 404
    models = client.get("/api/training/base-models", **_auth(token)).json()
    assert models == [{"id": unloaded_model.pk, "name": "tiny", "kind": "sd15", "source_type": "folder",
                       "native_size": 512, "description": "", "is_default": True}]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # a WSGI call closes the connection at its end, as in production
def test_the_training_api_keeps_to_its_openapi_schema(user, token, run_album, unloaded_model):
    """Generated requests (valid and invalid) never get a 5xx or a response outside the documented schema."""
    import schemathesis
    from django.core.wsgi import get_wsgi_application
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    shapes, _ = run_album
    services.run_create(owner=user, album_ids=[shapes.pk], params={}, enqueue=False)
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", get_wsgi_application())
    schema = schema.include(path_regex="^/api/training/(runs|loras|base-models|grids)")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 16

    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    for operation in operations:
        @given(case=st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in modes)))
        @settings(max_examples=15, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=checks)

        check()
