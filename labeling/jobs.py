"""RQ entry point for labeling (queue `label`)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage

from imagineer.jobs import JobContext, JobError, run_job

from .models import Label, LabelerSettings, LabelingJob
from .services import BACKEND_SOURCES, job_images, labels_store_result

MAX_RECORDED_ERRORS = 500


def _local_path(image, scratch: Path) -> Path:
    """A filesystem path for the original: the file itself on local storage, a copy from S3 otherwise."""
    try:
        return Path(default_storage.path(image.file.name))
    except NotImplementedError:
        target = scratch / f"{image.pk}{Path(image.file.name).suffix}"
        with default_storage.open(image.file.name, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return target


def label_images_body(ctx: JobContext) -> None:
    from .backends import ERROR_CANCELLED, BackendUnavailable, ImageInput, LabelResult, get_backend

    job: LabelingJob = ctx.job
    source = BACKEND_SOURCES[job.backend]
    images = list(job_images(job))
    total = len(images)
    if not job.force:
        done_ids = set(Label.objects.filter(image__in=images, source=source).values_list("image_id", flat=True))
        todo = [i for i in images if i.pk not in done_ids]
    else:
        todo = images
    counters = {"total": total, "labelled": 0, "skipped": total - len(todo), "failed": 0}
    ctx.update(progress=0.0, message=f"{len(todo)} of {total} image(s) to label", counters=counters)
    if not todo:
        ctx.update(progress=1.0, message="Every image already has labels from this backend.", check_cancel=False)
        return
    backend = get_backend(job.backend, **LabelerSettings.current().backend_options(job.backend))
    try:
        backend.check()
    except BackendUnavailable as exc:
        raise JobError(str(exc)) from exc
    errors = list(job.image_errors)
    batch_size = settings.LABEL_BATCH_SIZE
    scratch = Path(tempfile.mkdtemp(prefix="label-", dir=_scratch_root()))
    try:
        for start in range(0, len(todo), batch_size):
            ctx.check_cancel()
            batch = todo[start:start + batch_size]
            inputs = [ImageInput(id=i.pk, path=_local_path(i, scratch), mime=i.mime, width=i.width, height=i.height)
                      for i in batch]
            try:
                outcomes = backend.label_batch(inputs, should_stop=ctx.cancel_requested)
            except BackendUnavailable as exc:
                raise JobError(str(exc)) from exc
            by_id = {i.pk: i for i in batch}
            for image_id, outcome in outcomes.items():
                if isinstance(outcome, LabelResult):
                    labels_store_result(image=by_id[image_id], result=outcome, source=source, job=job,
                                        replace=job.force)
                    counters["labelled"] += 1
                elif getattr(outcome, "code", "") != ERROR_CANCELLED:
                    counters["failed"] += 1
                    if len(errors) < MAX_RECORDED_ERRORS:
                        errors.append({"image_id": image_id, "error": str(outcome)})
            done = counters["skipped"] + counters["labelled"] + counters["failed"]
            ctx.update(progress=done / total, counters=counters, image_errors=errors,
                       message=f"Labelled {counters['labelled']} of {len(todo)}"
                               + (f", {counters['failed']} failed" if counters["failed"] else ""))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if counters["failed"] and not counters["labelled"]:
        raise JobError(f"No image could be labelled; first error: {errors[0]['error'] if errors else 'unknown'}")
    ctx.update(message=f"Labelled {counters['labelled']}, skipped {counters['skipped']}, failed {counters['failed']}",
               check_cancel=False)


def _scratch_root() -> Path:
    root = Path(settings.WORK_DIR) / "labeling"
    root.mkdir(parents=True, exist_ok=True)
    return root


def run_labeling_job(job_id: int):
    return run_job(LabelingJob, job_id, label_images_body)
