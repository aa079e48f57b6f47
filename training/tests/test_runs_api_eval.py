"""The JSON API for picking and judging a LoRA, for scripts: the dataset check, the kept checkpoints, "use this
checkpoint", checkpoint grids and comparisons, with the same access rules as the pages."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from imagineer.models import JobStatus
from imagineer.services import api_token_create
from training.models import EvaluationGrid, LoraModel
from training.runs import services

from .runs_fixtures import FAST, RESOLUTION

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("media_root", "training_dirs"),
              pytest.mark.django_db(transaction=True)]


@pytest.fixture
def finished_run(user, run_album, tiny_base_model):
    from training.runs.jobs import run_training

    shapes, _ = run_album
    run = services.run_create(owner=user, album_ids=[shapes.pk], name="Api pick", enqueue=False,
                              params={**FAST, "steps": 3, "checkpoint_every": 1})
    run_training(run.pk)
    run.refresh_from_db()
    assert run.status == JobStatus.SUCCEEDED, run.error
    return run


def _auth(user) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, name='t')[1]}"}


def test_scripts_pick_a_step_and_judge_it_through_the_api(finished_run, client, user, other_user, run_worker):
    run, me, them = finished_run, _auth(user), _auth(other_user)
    base = f"/api/training/runs/{run.pk}"

    warnings = client.get(f"{base}/dataset-check", **me).json()
    assert {"code", "message", "image_ids"} <= set(warnings[0]) and "few_images" in {w["code"] for w in warnings}
    assert client.get(f"{base}/checkpoints", **me).json() == {"steps": [1, 2, 3]}

    made = client.post(f"{base}/checkpoints/2/lora", **me)
    assert made.status_code == 201, made.content
    lora = LoraModel.objects.get(checkpoint_of=run, checkpoint_step=2)
    assert made.json()["id"] == lora.pk and made.json()["name"] == "api-pick-step-2"
    assert client.post(f"{base}/checkpoints/7/lora", **me).status_code == 409
    assert client.post(f"{base}/checkpoints/1/lora", **them).status_code == 404

    grid = client.post(f"{base}/grids", {"prompts": ["a red square"], "weights": [1.0], "seed": 4, "steps": 2},
                       content_type="application/json", **me)
    assert grid.status_code == 201, grid.content
    body = grid.json()
    assert body["status"] == "queued" and body["grid_url"] is None and len(body["columns"]) == 3
    bad = client.post(f"{base}/grids", {"prompts": ["  "]}, content_type="application/json", **me)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][-1] == "prompts"
    assert EvaluationGrid.objects.count() == 1

    run_worker("generate")
    done = client.get(f"/api/training/grids/{body['id']}", **me).json()
    assert done["status"] == "succeeded" and len(done["cells"]) == 3
    assert {cell["seed"] for cell in done["cells"]} == {4}
    sheet = client.get(done["grid_url"], **me)
    assert sheet.status_code == 200
    cell = client.get(done["cells"][0]["url"], **me)
    with Image.open(io.BytesIO(b"".join(cell.streaming_content))) as picture:
        assert picture.size == (RESOLUTION, RESOLUTION)
    # Another user sees none of it.
    for url in (f"/api/training/grids/{body['id']}", done["grid_url"], done["cells"][0]["url"]):
        assert client.get(url, **them).status_code == 404

    final = LoraModel.objects.get(training_run=run)
    compare = client.post("/api/training/grids/compare",
                          {"lora_ids": [final.pk, lora.pk], "prompts": ["a blue square"], "steps": 2},
                          content_type="application/json", **me)
    assert compare.status_code == 201 and compare.json()["columns"] == [final.name, lora.name]
    theirs = client.post("/api/training/grids/compare",
                         {"lora_ids": [final.pk, lora.pk], "prompts": ["x"]}, content_type="application/json",
                         **them)
    assert theirs.status_code == 422 and EvaluationGrid.objects.count() == 2
