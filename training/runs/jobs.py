"""RQ entry point for LoRA training (queue `train`, run by the non-forking WarmWorker).

The task starts the fairest queued run (round robin by user, imagineer.fairqueue) and hands it to
`services.train.run_train`, which does the work.
"""

from __future__ import annotations

from imagineer import fairqueue
from imagineer.jobs import run_job

from ..models import EvaluationGrid, TrainingRun
from .evaluation import evaluation_run
from .services.train import run_train


def run_training(run_id: int) -> str | None:
    """RQ entry point: start the fairest queued run (one per task; see imagineer.fairqueue), often not `run_id`.

    The train queue is shared by everyone, and a run takes hours, so runs go round robin by user like
    generations do. Outside a worker (`manage.py train_lora --inline`, benchmarks) it runs exactly `run_id`.
    Returns the final status, or None when nothing waited.
    """
    from rq import get_current_job

    current = get_current_job()
    if current is None:
        return run_job(TrainingRun, run_id, run_train)
    run = fairqueue.claim_next(TrainingRun, task_id=current.id)
    if run is None:
        return None
    # The claim marked the row running for this task; run_job takes it over as this task's.
    return run_job(TrainingRun, run.pk, run_train, task_id=current.id)


def run_evaluation(grid_id: int) -> str | None:
    """RQ entry point (queue `generate`): make one evaluation grid (training.runs.evaluation)."""
    return run_job(EvaluationGrid, grid_id, evaluation_run)
