"""Evaluation grids on the generate queue: checkpoints × prompts × weights with the same seeds, and comparing LoRAs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imagineer.models import JobStatus
from training.models import EvaluationGrid, LoraModel
from training.runs import evaluation, services
from training.runs.params import RunInputError

from .runs_fixtures import FAST, RESOLUTION

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("media_root", "training_dirs")]


def _stored(key: str) -> Path:
    from django.core.files.storage import storages

    return Path(storages["artifacts"].path(key))


def _pixels(key: str):
    from PIL import Image

    with Image.open(_stored(key)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture
def finished_run(user, run_album, tiny_base_model):
    from training.runs.jobs import run_training

    shapes, _ = run_album
    run = services.run_create(owner=user, album_ids=[shapes.pk], name="Grid me", enqueue=False,
                              params={**FAST, "steps": 3, "checkpoint_every": 1})
    run_training(run.pk)
    run.refresh_from_db()
    assert run.status == JobStatus.SUCCEEDED, run.error
    return run


def test_a_checkpoint_grid_has_every_cell_with_the_same_seeds(finished_run, user, user_client, other_client,
                                                              run_worker):
    run = finished_run
    response = user_client.post(f"/training/runs/{run.pk}/grids/", {
        "prompts": "a red square with a white circle\na blue square", "weights": "0, 1", "seed": "5", "steps": "3"})
    grid = EvaluationGrid.objects.get()
    assert response.status_code == 302 and response["Location"] == grid.get_absolute_url()
    # Checkpoints at steps 1, 2, 3 (the last is also the final LoRA, listed once), each at weight 0 and 1.
    assert [c["label"] for c in grid.columns] == ["step 1 × 0", "step 1 × 1", "step 2 × 0", "step 2 × 1",
                                                  "step 3 × 0", "step 3 × 1"]
    run_worker("generate")
    grid.refresh_from_db()

    assert grid.status == JobStatus.SUCCEEDED, grid.error
    assert sorted((c["row"], c["col"]) for c in grid.cells) == [(r, c) for r in range(2) for c in range(6)]
    assert all(cell["seed"] == 5 + cell["row"] for cell in grid.cells)
    cells = {(c["row"], c["col"]): _pixels(c["file"]) for c in grid.cells}
    for row in range(2):
        # At weight 0 every checkpoint is the base model: same seed, same image.
        assert np.array_equal(cells[(row, 0)], cells[(row, 2)]) and np.array_equal(cells[(row, 0)], cells[(row, 4)])
        # At weight 1 the LoRA shows, and training moved it between step 1 and step 3.
        assert np.abs(cells[(row, 1)] - cells[(row, 0)]).max() > 0
        assert np.abs(cells[(row, 1)] - cells[(row, 5)]).max() > 0
    sheet = _pixels(grid.grid_file)
    assert sheet.shape == (evaluation.LABEL_HEIGHT + 2 * RESOLUTION, 6 * RESOLUTION, 3)
    top = evaluation.LABEL_HEIGHT + RESOLUTION  # row 1, column 5 sits there in the sheet
    assert np.array_equal(sheet[top:top + RESOLUTION, 5 * RESOLUTION:6 * RESOLUTION], cells[(1, 5)])

    page = user_client.get(grid.get_absolute_url()).content.decode()
    assert page.count(f"/training/grids/{grid.pk}/cells/") == 12 and "step 2 × 1" in page
    download = user_client.get(f"/training/grids/{grid.pk}/grid.png")
    assert download.status_code == 200 and "attachment" in download["Content-Disposition"]
    assert other_client.get(grid.get_absolute_url()).status_code == 404
    assert other_client.get(f"/training/grids/{grid.pk}/grid.png").status_code == 404
    assert other_client.post(f"/training/runs/{run.pk}/grids/", {"prompts": "x"}).status_code == 404
    assert f"/training/grids/{grid.pk}/" in user_client.get(run.get_absolute_url()).content.decode()


def test_two_loras_compare_side_by_side_and_bad_requests_are_refused(finished_run, user, other_user, user_client,
                                                                     run_worker, xl_base):
    run = finished_run
    final = LoraModel.objects.get(training_run=run)
    early = services.lora_from_checkpoint(run=run, step=1)
    response = user_client.post("/training/loras/compare/", {"a": final.pk, "b": early.pk,
                                                             "prompts": "a red square", "steps": "3", "seed": "2"})
    grid = EvaluationGrid.objects.get()
    assert response.status_code == 302 and grid.run is None
    assert [c["label"] for c in grid.columns] == [final.name, early.name]
    run_worker("generate")
    grid.refresh_from_db()
    assert grid.status == JobStatus.SUCCEEDED, grid.error
    cells = {c["col"]: _pixels(c["file"]) for c in grid.cells}
    assert len(cells) == 2 and np.abs(cells[0] - cells[1]).max() > 0

    other = LoraModel.objects.create(name="theirs", friendly_name="t", owner=other_user, base_model=run.base_model,
                                     diffusers_file=final.diffusers_file)
    xl = LoraModel.objects.create(name="xl", friendly_name="x", owner=user, base_model=xl_base,
                                  diffusers_file=final.diffusers_file)
    for loras, message in (([final], "two different LoRAs"), ([final, other], "No such LoRA"),
                           ([final, xl], "different base models")):
        with pytest.raises(RunInputError, match=message):
            evaluation.grid_compare(owner=user, loras=loras, prompts=["x"], enqueue=False)
    with pytest.raises(RunInputError, match="That is 96 images; a grid holds at most 64"):
        evaluation.grid_for_run(run=run, owner=user, prompts=[f"p{i}" for i in range(8)], weights=[0, 0.5, 1, 2],
                                enqueue=False)
    bad = user_client.post("/training/loras/compare/", {"a": final.pk, "b": other.pk, "prompts": "x"})
    assert bad.status_code == 400 and "Choose two LoRAs you may use" in bad.content.decode()
    assert EvaluationGrid.objects.count() == 1
