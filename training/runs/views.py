"""Training pages: run list, create, run page (live progress), cancel/resume, downloads, LoRA list and detail."""

from __future__ import annotations

import math
import shutil
import tempfile
import zipfile
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from imagineer import fairqueue
from imagineer.artifacts import artifact_response
from imagineer.jobs import QueueUnavailable
from imagineer.models import JobStatus
from imagineer.quotas import QuotaExceeded

from ..models import LoraModel, TrainingRun
from . import estimates, selectors, services
from .dataset_check import check_run, check_snapshot
from .forms import LoraEditForm, RunForm, suggested_preset_for
from .params import PARAMS, PRESETS, RunInputError, family_default


def _get_run_for_user(request: HttpRequest, pk: int) -> TrainingRun:
    run = get_object_or_404(selectors.runs_visible_to(request.user), pk=pk)
    return run


def _get_lora_for_user(request: HttpRequest, pk: int) -> LoraModel:
    return get_object_or_404(selectors.loras_visible_to(request.user), pk=pk)


@login_required
@require_GET
def index(request: HttpRequest) -> HttpResponse:
    show_all = request.user.is_staff and request.GET.get("all") == "1"
    runs = selectors.runs_visible_to(request.user)
    if not show_all:
        runs = runs.filter(owner=request.user)
    return render(request, "training/runs/index.html", {"runs": runs[:100], "show_all": show_all})


def _run_form(request: HttpRequest, data=None, *, initial=None, with_prompts: bool = True) -> RunForm:
    albums = list(selectors.albums_for_training(request.user))
    prompts = selectors.sample_prompts_for(albums, request.user) if with_prompts else None
    return RunForm(data, initial=initial, albums=albums, base_models=selectors.base_models(), user=request.user,
                   sample_prompts=prompts)


@login_required
@require_http_methods(["GET", "POST"])
def run_create(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        album = request.GET.get("album", "")
        form = _run_form(request, initial={"albums": [int(album)]} if album.isdigit() else None)
        return _render_create(request, form)
    form = _run_form(request, request.POST)
    if not form.is_valid():
        return _render_create(request, form, status=400)
    base_model = form.cleaned_data.get("base_model")
    try:
        run = services.run_create(owner=request.user, album_ids=form.cleaned_data["albums"], params=form.params(),
                                  name=form.cleaned_data["name"], base_model=base_model)
    except RunInputError as exc:
        form.add_service_errors(exc)
        return _render_create(request, form, status=400)
    except QuotaExceeded as exc:
        form.add_error(None, str(exc))
        return _render_create(request, form, status=429)
    except QueueUnavailable as exc:
        form.add_error(None, str(exc))
        return _render_create(request, form, status=503)
    messages.success(request, "Training started.")
    return redirect(run)


def _model_defaults(size: int, kind: str) -> dict:
    """What the create page refills when this base model is chosen (see static/js/training.js)."""
    return {"size": size, "preset": suggested_preset_for(size),
            "mixed_precision": family_default(kind, "mixed_precision", PARAMS["mixed_precision"].default),
            "gradient_checkpointing": bool(family_default(kind, "gradient_checkpointing",
                                                          PARAMS["gradient_checkpointing"].default))}


def _render_create(request: HttpRequest, form: RunForm, status: int = 200) -> HttpResponse:
    context = {"form": form, "presets": PRESETS, "has_albums": bool(form.album_rows),
               "has_models": selectors.base_models().exists(), **_estimate_context(form, request.user),
               "form_defaults": {"models": {name: _model_defaults(size, form.model_kinds.get(name, ""))
                                            for name, size in form.model_sizes.items()},
                                 "prompts": {str(pk): prompt for pk, prompt in form.sample_prompts.items()}}}
    return render(request, "training/runs/create.html", context, status=status)


def _estimate_context(form: RunForm, user=None) -> dict:
    """The expected duration of the run the form describes now (its data, else its initial values); any
    value that is not a number yet just leaves the estimate out."""
    def number(name: str) -> int | None:
        raw = form[name].value()
        try:
            value = int(str(raw).strip()) if raw not in (None, "") else None
        except ValueError:
            return None
        return value if value is not None and 0 < value <= 1_000_000 else None

    name = form["base_model"].value()
    model = form.fields["base_model"].queryset.filter(name=name).first() if isinstance(name, str) and name else None
    resolution = number("resolution") or (model.native_size if model else None)
    batch_size = number("batch_size")
    steps, epochs = number("steps"), number("epochs")
    if epochs and batch_size:
        chosen = {str(pk) for pk in (form["albums"].value() or [])}
        images = sum(a.image_count for a in form.album_rows if str(a.pk) in chosen)
        steps = math.ceil(epochs * images / batch_size) if images else steps
    result = estimates.estimate(base_model=model, resolution=resolution, steps=steps, batch_size=batch_size)
    return {"estimate": result, "estimate_model": model, "estimate_resolution": resolution,
            "estimate_batch_size": batch_size,
            "dataset_warnings": _form_dataset_warnings(
                form, user, resolution=resolution, steps=steps, batch_size=batch_size,
                accumulation=number("gradient_accumulation"))}


def _form_dataset_warnings(form: RunForm, user, *, resolution, steps, batch_size, accumulation) -> list:
    """The dataset check of the albums the form has chosen, with its settings (warnings, never blocks)."""
    if user is None:
        return []
    chosen = {str(pk) for pk in (form["albums"].value() or [])}
    albums = [a for a in form.album_rows if str(a.pk) in chosen]
    if not albums or not resolution or not steps:
        return []
    snapshot = services.dataset_snapshot(user=user, albums=albums)
    trigger = form["trigger_word"].value() or ""
    return check_snapshot(snapshot, resolution=resolution, steps=steps, batch_size=batch_size or 1,
                          gradient_accumulation=accumulation or 1, trigger_word=str(trigger))


@login_required
@require_GET
def run_estimate(request: HttpRequest) -> HttpResponse:
    """The create page's duration line for the settings it sends (htmx, whenever a field changes)."""
    form = _run_form(request, request.GET, with_prompts=False)
    return render(request, "training/runs/_estimate.html", _estimate_context(form, request.user))


def _status_context(run: TrainingRun) -> dict:
    lora = LoraModel.objects.filter(training_run=run).first()
    return {
        "run": run,
        "eta": selectors.duration_text(run.eta),
        "duration": selectors.duration_text(run.duration),
        "chart": selectors.loss_chart(run),
        "log": selectors.log_tail(run),
        "samples": selectors.sample_images(run),
        "files": selectors.run_files(run),
        "lora": lora,
        "can_resume": run.status in (JobStatus.CANCELLED, JobStatus.FAILED) and lora is None,
        "position": fairqueue.queue_position(run),
    }


@login_required
@require_GET
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = _get_run_for_user(request, pk)
    context = _status_context(run)
    if request.htmx:
        return render(request, "training/runs/_run_status.html", context)
    context["albums"] = list(run.albums.all())
    from .provenance import snapshot_summary, snapshot_warning

    context["provenance"] = snapshot_summary(run.dataset or [])
    context["provenance_warning"] = snapshot_warning(context["provenance"])
    context["dataset_warnings"] = check_run(run)
    registered = {lora.checkpoint_step: lora for lora in run.checkpoint_loras.all()}
    final = LoraModel.objects.filter(training_run=run).first()
    if final is not None and run.status == JobStatus.SUCCEEDED:
        registered.setdefault(run.step, final)  # the last step's checkpoint is the final LoRA already
    context["checkpoints"] = [(step, registered.get(step)) for step in services.stored_checkpoints(run)]
    context["grids"] = list(run.grids.all()[:20])
    return render(request, "training/runs/detail.html", context)


@login_required
@require_POST
def run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    run = _get_run_for_user(request, pk)
    if services.run_cancel(run=run):
        messages.info(request, "Cancelling: the run saves a checkpoint, so it can be resumed.")
    if request.htmx:
        return render(request, "training/runs/_run_status.html", _status_context(run))
    return redirect(run)


@login_required
@require_POST
def run_resume(request: HttpRequest, pk: int) -> HttpResponse:
    run = _get_run_for_user(request, pk)
    try:
        services.run_resume(run=run)
    except (services.RunStateError, QuotaExceeded, QueueUnavailable) as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, run.message)
    if request.htmx:
        run.refresh_from_db()
        return render(request, "training/runs/_run_status.html", _status_context(run))
    return redirect(run)


@login_required
@require_GET
def run_download(request: HttpRequest, pk: int, what: str) -> HttpResponse:
    run = _get_run_for_user(request, pk)
    if what == "dataset":
        return _dataset_zip(run, request.user)
    key = selectors.run_files(run).get(what)
    if key is None:
        raise Http404("No such file.")
    lora = LoraModel.objects.filter(training_run=run).first()
    names = {"lora": f"{lora.name if lora else run.pk}.diffusers.safetensors",
             "kohya": f"{lora.name if lora else run.pk}.safetensors", "log": f"run-{run.pk}.log"}
    content_type = "text/plain; charset=utf-8" if what == "log" else "application/octet-stream"
    return artifact_response(key, filename=names[what], content_type=content_type)


def _dataset_zip(run: TrainingRun, user) -> HttpResponse:
    """The frozen dataset as trained: kohya layout (image + .txt caption) plus metadata.jsonl.

    Only the images `user` may still see: one that turned private since the run started is left out.
    """
    import json

    visible = selectors.dataset_image_ids_visible_to(run, user)
    root = Path(settings.WORK_DIR) / "exports"
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=root, prefix=f"run-{run.pk}-"))
    try:
        archive = work / f"run-{run.pk}-dataset.zip"
        lines = []
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
            for n, entry in enumerate(run.dataset, start=1):
                name = entry.get("file", "")
                if entry.get("image_id") not in visible or not name or not default_storage.exists(name):
                    continue
                filename = f"{n:05d}{Path(name).suffix.lower()}"
                with default_storage.open(name, "rb") as src, zf.open(filename, "w") as dst:
                    shutil.copyfileobj(src, dst)
                zf.writestr(f"{n:05d}.txt", entry.get("caption", "") + "\n")
                lines.append(json.dumps({"file_name": filename, "text": entry.get("caption", ""),
                                         "image_id": entry.get("image_id"), "sha256": entry.get("sha256")},
                                        ensure_ascii=False))
            zf.writestr("metadata.jsonl", "\n".join(lines) + ("\n" if lines else ""))
        handle = archive.open("rb")
    finally:
        # On Linux the open handle keeps the data readable after the folder is gone.
        shutil.rmtree(work, ignore_errors=True)
    return FileResponse(handle, as_attachment=True, filename=f"run-{run.pk}-dataset.zip",
                        content_type="application/zip")


@login_required
@require_GET
def run_sample(request: HttpRequest, pk: int, step: int, index: int) -> HttpResponse:
    run = _get_run_for_user(request, pk)
    key = selectors.sample_key(run, step, index)
    if key is None:
        raise Http404("No such sample.")
    return artifact_response(key, filename=f"run-{run.pk}-step-{step}-{index}.png", as_attachment=False,
                             content_type="image/png")


@require_GET
def lora_list(request: HttpRequest) -> HttpResponse:
    loras = selectors.loras_visible_to(request.user)
    mine = request.GET.get("mine") == "1" and request.user.is_authenticated
    if mine:
        loras = loras.filter(owner=request.user)
    return render(request, "training/runs/lora_list.html", {"loras": loras[:200], "mine": mine})


@require_GET
def lora_detail(request: HttpRequest, pk: int) -> HttpResponse:
    lora = _get_lora_for_user(request, pk)
    can_manage = selectors.can_manage(request.user, lora)
    run = lora.training_run if lora.training_run_id and can_manage else None
    form = LoraEditForm(initial={"friendly_name": lora.friendly_name, "default_weight": lora.default_weight,
                                 "trigger_words": lora.trigger_words, "is_public": lora.is_public})
    return render(request, "training/runs/lora_detail.html", {
        "lora": lora, "run": run, "can_manage": can_manage, "form": form,
        "has_diffusers": selectors.lora_key(lora, "diffusers") is not None,
        "has_kohya": selectors.lora_key(lora, "kohya") is not None,
    })


@login_required
@require_POST
def lora_edit(request: HttpRequest, pk: int) -> HttpResponse:
    lora = _get_lora_for_user(request, pk)
    if not selectors.can_manage(request.user, lora):
        raise Http404("No such LoRA.")
    form = LoraEditForm(request.POST)
    if not form.is_valid():
        messages.error(request, "; ".join(e for errors in form.errors.values() for e in errors))
        return redirect(lora)
    services.lora_update(lora=lora, **form.cleaned_data)
    messages.success(request, "Saved.")
    return redirect(lora)


@require_GET
def lora_download(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    lora = _get_lora_for_user(request, pk)
    filenames = {"diffusers": f"{lora.name}.diffusers.safetensors", "kohya": f"{lora.name}.safetensors"}
    if fmt not in filenames:
        raise Http404("No such format.")
    # Only a key the LoRA's run wrote, under its own prefix; anything else is as good as gone.
    key = selectors.lora_key(lora, fmt)
    if key is None:
        raise Http404("The file is gone.")
    return artifact_response(key, filename=filenames[fmt], content_type="application/octet-stream")
