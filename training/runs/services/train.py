"""Running one training run (the body of the `train` job): the worker's half of training.

The run's frozen dataset is materialised into a temporary folder, the ML library trains in this worker's local
scratch folder, progress goes to the row at a bounded rate, and everything others read goes to the artifacts
storage as it is written (training.runs.artifacts): the log, samples, each checkpoint, the LoRA files. A cancel
makes the library save a checkpoint first; a later attempt on any machine (resume, or the reaper after a worker
died) downloads it and continues from that step.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import DatabaseError, connection
from django.utils import timezone

from imagineer.artifacts import PeriodicUpload, artifact_open
from imagineer.jobs import JobCancelled, JobContext, JobError

from ...basemodels import BaseModelUnavailable, local_source
from ...models import TrainingRun, TrainingStage
from ..artifacts import LOG_NAME, fetch_latest_checkpoint, log_key, upload_checkpoint, upload_lora, upload_samples
from ..params import OPTION_NAMES
from . import dataset_root, lora_name_for, lora_register

logger = logging.getLogger(__name__)

# The row is written at most this often (plus at checkpoints, samples and the last step): a GPU may do
# tens of steps a second and each write is a database round trip.
UPDATE_INTERVAL = 0.5
CANCEL_CHECK_INTERVAL = 0.25
# The loss chart keeps about this many points, each the mean of a window of steps.
MAX_CHART_POINTS = 400
MAX_SAMPLE_PROMPTS = 4


class RunLog:
    """The run's log file (train.log in the run folder), one timestamped line per event."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, line: str) -> None:
        stamp = timezone.now().strftime("%Y-%m-%d %H:%M:%S")
        with self.path.open("a", encoding="utf-8") as handle:
            for part in str(line).splitlines() or [""]:
                handle.write(f"{stamp} {part}\n")


def chart_stride(total_steps: int) -> int:
    return max(1, math.ceil(total_steps / MAX_CHART_POINTS))


def chart_points(losses: list[float], total_steps: int) -> list[list[float]]:
    """[[step, mean loss of the window ending there], ...] from a per-step loss list (index 0 = step 1)."""
    stride = chart_stride(total_steps)
    points = []
    for end in range(stride, len(losses) + stride, stride):
        window = losses[end - stride: min(end, len(losses))]
        if window:
            points.append([min(end, len(losses)), round(sum(window) / len(window), 6)])
    return points


class Progress:
    """Turns the library's callbacks into row updates at a bounded rate."""

    def __init__(self, ctx: JobContext, run: TrainingRun, log: RunLog, log_upload: PeriodicUpload) -> None:
        self.ctx, self.run, self.log, self.log_upload = ctx, run, log, log_upload
        self.stride = chart_stride(run.steps)
        self.points: list[list[float]] = [list(p) for p in run.loss_history]
        self.window: list[float] = []
        self.first: tuple[float, int] | None = None
        self.last_write = 0.0
        self.last_cancel_check = 0.0
        self.cancel_seen = False
        self.samples = list(run.samples)

    def on_step(self, step: int, total: int, loss: float, _lr: float) -> None:
        now = time.monotonic()
        if self.first is None:
            # The first step of this attempt: drop chart points a resume will train again.
            self.points = [p for p in self.points if p[0] < step]
            self.window = []
            self.first = (now, step - 1)
        self.window.append(loss)
        self.log_upload.tick()
        if step % self.stride == 0 or step == total:
            self.points.append([step, round(sum(self.window) / len(self.window), 6)])
            self.window = []
        if now - self.last_write >= UPDATE_INTERVAL or step == total:
            self.write(step, total, loss, now)

    def write(self, step: int, total: int, loss: float | None = None, now: float | None = None, **extra: Any) -> None:
        now = now or time.monotonic()
        self.last_write = now
        values: dict[str, Any] = {"step": step, "total_steps": total, "loss_history": self.points, **extra}
        if self.first and now > self.first[0] and step > self.first[1]:
            values["steps_per_second"] = (step - self.first[1]) / (now - self.first[0])
        finished = step >= total
        values["stage"] = TrainingStage.SAVING if finished else TrainingStage.TRAINING
        shown = f", loss {loss:.4f}" if loss is not None and math.isfinite(loss) else ""
        message = "Saving the LoRA…" if finished else f"Step {step} of {total}{shown}"
        if self.cancel_seen and not finished:
            message = "Cancelling: saving a checkpoint…"
        try:
            self.ctx.update(progress=0.98 * step / max(total, 1), message=message, check_cancel=False, **values)
        except DatabaseError as exc:
            # Hours of training must not die on one failed progress write; the next write tries again.
            self._database_hiccup(exc)

    def on_checkpoint(self, step: int, path: Path) -> None:
        # Into storage as it is written, so a resume on any machine continues here.
        try:
            upload_checkpoint(self.run, step, path, keep=settings.TRAIN_KEEP_CHECKPOINTS)
        except Exception as exc:  # a store hiccup must not end hours of training; the next checkpoint retries
            self.log(f"could not store the checkpoint at step {step} ({type(exc).__name__}: {exc})")
        self.write(step, self.run.steps)
        self.log_upload.tick()

    def on_sample(self, step: int, paths: list[Path]) -> None:
        try:
            files = upload_samples(self.run, paths)
        except Exception as exc:
            self.log(f"could not store the samples of step {step} ({type(exc).__name__}: {exc})")
            return
        self.samples = [s for s in self.samples if s["step"] != step] + [{"step": step, "files": files}]
        self.log(f"samples at step {step}: {', '.join(files)}")
        try:
            self.ctx.update(samples=self.samples, check_cancel=False)
        except DatabaseError as exc:
            self._database_hiccup(exc)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self.last_cancel_check < CANCEL_CHECK_INTERVAL:
            return self.cancel_seen
        self.last_cancel_check = now
        try:
            self.cancel_seen = self.ctx.cancel_requested()
        except DatabaseError as exc:
            self._database_hiccup(exc)
        return self.cancel_seen

    def _database_hiccup(self, exc: Exception) -> None:
        self.log(f"could not reach the database ({type(exc).__name__}: {exc}); training goes on")
        connection.close_if_unusable_or_obsolete()


def _materialise(run: TrainingRun, folder: Path, log: RunLog) -> list[tuple[Path, str]]:
    """Link (or copy) the snapshot's originals into folder; images deleted since are skipped."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    dataset = []
    missing = 0
    for n, entry in enumerate(run.dataset, start=1):
        name = entry.get("file", "")
        target = folder / f"{n:05d}{Path(name).suffix.lower()}"
        try:
            _link_or_copy(name, target)
        except (OSError, ValueError):
            missing += 1
            log(f"image {entry.get('image_id')} is gone from storage; training without it")
            continue
        dataset.append((target, entry.get("caption", "")))
    if missing:
        log(f"{missing} of {len(run.dataset)} image(s) are no longer stored")
    if not dataset:
        raise JobError("None of the run's images are stored any more, so there is nothing to train on.")
    return dataset


def _link_or_copy(name: str, target: Path) -> None:
    if not name:
        raise ValueError("no file name")
    try:
        source = Path(default_storage.path(name))
    except NotImplementedError:  # remote storage (S3): copy the bytes down
        with default_storage.open(name, "rb") as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        return
    if not source.is_file():
        raise FileNotFoundError(name)
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or links not allowed
        shutil.copyfile(source, target)


def _config(run: TrainingRun):
    from dataclasses import fields

    from training.ml.train_config import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    options = {key: value for key, value in (run.options or {}).items() if key in known and key in OPTION_NAMES}
    prompts = [p.strip() for p in run.sample_prompt.split("|") if p.strip()][:MAX_SAMPLE_PROMPTS]
    return TrainConfig(
        steps=run.steps,
        batch_size=run.batch_size,
        learning_rate=run.learning_rate,
        rank=run.rank,
        alpha=run.alpha,
        resolution=run.resolution,
        seed=run.seed,
        mixed_precision=run.mixed_precision,
        gradient_checkpointing=run.gradient_checkpointing,
        caption_dropout=run.caption_dropout,
        center_crop=run.center_crop,
        random_flip=run.random_flip,
        checkpoint_every=run.checkpoint_every,
        keep_checkpoints=settings.TRAIN_KEEP_CHECKPOINTS,
        sample_every=run.sample_every if prompts else 0,
        sample_prompts=prompts,
        **options,
    )


def run_train(ctx: JobContext) -> None:
    """Train the claimed run (run_job calls this with its context); raises JobCancelled / JobError."""
    from training.ml.errors import ModelNotFound, NonFiniteLoss, TrainingCancelled, WrongModelKind
    from training.ml.train import TrainCallbacks, train_lora

    run: TrainingRun = ctx.job
    run_dir = run.run_dir  # this worker's scratch folder; what others read is uploaded from it
    shutil.rmtree(run_dir, ignore_errors=True)
    log = RunLog(run_dir / LOG_NAME)
    log_upload = PeriodicUpload(run_dir / LOG_NAME, log_key(run), every=settings.ARTIFACT_LOG_UPLOAD_SECONDS)
    try:
        with artifact_open(log_key(run)) as previous:  # the log of earlier attempts, from whichever machine
            (run_dir / LOG_NAME).write_bytes(previous.read())
    except FileNotFoundError:
        pass
    log(f"attempt {run.attempts}: {run.steps} steps on {len(run.dataset)} image(s), base model {run.base_model.name}")
    folder = dataset_root() / f"run-{run.pk}-dataset"
    try:
        resume_step = fetch_latest_checkpoint(run)
        if resume_step:
            log(f"resuming from the checkpoint at step {resume_step}")
        ctx.update(stage=TrainingStage.PREPARING, message="Preparing the dataset…",
                   total_steps=run.steps, step=resume_step or 0, resumed_from=resume_step or run.resumed_from)
        dataset = _materialise(run, folder, log)
        ctx.update(stage=TrainingStage.TRAINING, message="Loading the base model…",
                   counters={"images_used": len(dataset)})
        progress = Progress(ctx, run, log, log_upload)
        name = lora_name_for(run)
        try:
            config = _config(run)
            with local_source(run.base_model) as (source, source_type):
                result = train_lora(
                    base_model=source,
                    kind=run.base_model.kind,
                    source_type=source_type,
                    dataset=dataset,
                    output_dir=run_dir,
                    config=config,
                    callbacks=TrainCallbacks(on_step=progress.on_step, should_stop=progress.should_stop,
                                             on_checkpoint=progress.on_checkpoint, on_sample=progress.on_sample,
                                             on_log=log),
                    name=name,
                )
        except TrainingCancelled as exc:
            log(str(exc))
            progress.write(exc.step, run.steps)
            raise JobCancelled() from exc
        except NonFiniteLoss as exc:
            log(str(exc))
            raise JobError(str(exc)) from exc
        except (ModelNotFound, WrongModelKind, BaseModelUnavailable) as exc:
            log(str(exc))
            raise JobError(f"Base model {run.base_model.name}: {exc}") from exc
        except ValueError as exc:  # settings the library refuses (named field by field) or a resume mismatch
            log(str(exc))
            raise JobError(str(exc)) from exc
        except RuntimeError as exc:
            if type(exc).__name__ != "OutOfMemoryError":  # torch's CUDA OOM, matched by name to keep torch out
                raise
            log(str(exc))
            raise JobError("The GPU ran out of memory. Lower the batch size or the resolution, or turn on "
                           "gradient checkpointing, then start a new run.") from exc
        ctx.update(stage=TrainingStage.SAVING, message="Storing the LoRA…", check_cancel=False)
        from ..provenance import stamp_run_sources

        stamp_run_sources(run, result.lora_path, result.kohya_path)  # a summary of its sources, in the files
        diffusers_key, diffusers_sha = upload_lora(run, result.lora_path)
        kohya_key, kohya_sha = upload_lora(run, result.kohya_path)
        lora = lora_register(run=run, diffusers_file=diffusers_key, diffusers_sha256=diffusers_sha,
                             kohya_file=kohya_key, kohya_sha256=kohya_sha, name=name)
        log(f"registered LoRA {lora.name}: {diffusers_key}, {kohya_key}")
        ctx.update(
            stage=TrainingStage.DONE,
            step=result.final_step,
            loss_history=chart_points(result.loss_history, run.steps),
            steps_per_second=result.steps_per_second or run.steps_per_second,
            resumed_from=result.resumed_from or run.resumed_from,
            message=f"Trained {result.final_step} steps: LoRA “{lora.name}”.",
            check_cancel=False,
        )
    except BaseException as exc:
        if not isinstance(exc, (JobCancelled, JobError)):
            log(f"failed: {type(exc).__name__}: {exc}")
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        try:
            log_upload.final()
        except Exception:  # the run's outcome is in the row; a lost log tail must not change it
            logger.warning("could not store the log of run %s", run.pk, exc_info=True)
        # Everything worth keeping is in storage now: checkpoints, samples, the LoRA, the log.
        shutil.rmtree(run_dir, ignore_errors=True)
