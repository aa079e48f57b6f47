"""Choosing and judging a LoRA: a kept checkpoint as a LoRA of its own, evaluation grids, and comparing LoRAs."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from imagineer.artifacts import artifact_response
from imagineer.jobs import QueueUnavailable

from ..models import EvaluationGrid
from . import evaluation, selectors, services
from .params import RunInputError
from .views import _get_run_for_user


@login_required
@require_POST
def run_checkpoint_lora(request: HttpRequest, pk: int, step: int) -> HttpResponse:
    """“Use this checkpoint”: the LoRA of that kept step, registered beside the run's final one."""
    run = _get_run_for_user(request, pk)
    if not selectors.can_manage(request.user, run):
        return redirect(run.get_absolute_url())
    try:
        lora = services.lora_from_checkpoint(run=run, step=step)
    except services.RunStateError as exc:
        messages.error(request, str(exc))
        return redirect(run.get_absolute_url())
    messages.success(request, f"Registered the LoRA of step {step} as “{lora.name}”.")
    return redirect(lora.get_absolute_url())


# --- evaluation grids ---------------------------------------------------------------------------------------


def _get_grid_for_user(request: HttpRequest, pk: int) -> EvaluationGrid:
    return get_object_or_404(selectors.grids_visible_to(request.user), pk=pk)


def _numbers(text: str) -> list[float]:
    return [float(part) for part in text.replace(";", ",").split(",") if part.strip()]


def _grid_input(request: HttpRequest) -> dict:
    """Prompts (one a line), weights ("0.6, 1"), seed and steps from a posted grid form; RunInputError when bad."""
    data = request.POST
    errors = {}
    try:
        weights = _numbers(data.get("weights", "") or "1")
    except ValueError:
        errors["weights"] = ["LoRA weights are numbers, e.g. 0.6, 1.0."]
        weights = [1.0]
    values = {}
    for name, default in (("seed", 0), ("steps", 20)):
        raw = (data.get(name) or "").strip()
        try:
            values[name] = int(raw) if raw else default
        except ValueError:
            errors[name] = [f"The {name} is a whole number."]
    if values.get("seed", 0) < 0 or values.get("seed", 0) > 2**31 - 1:
        errors["seed"] = ["The seed is between 0 and 2147483647."]
    if errors:
        raise RunInputError(errors)
    return {"prompts": data.get("prompts", "").splitlines(), "weights": weights, **values}


def _error_text(exc: RunInputError) -> str:
    return " ".join(message for messages_ in exc.errors.values() for message in messages_)


@login_required
@require_POST
def run_grid_create(request: HttpRequest, pk: int) -> HttpResponse:
    run = _get_run_for_user(request, pk)
    try:
        grid = evaluation.grid_for_run(run=run, owner=request.user, **_grid_input(request))
    except RunInputError as exc:
        messages.error(request, _error_text(exc))
        return redirect(f"{run.get_absolute_url()}#evaluation")
    except QueueUnavailable as exc:
        messages.error(request, str(exc))
        return redirect(f"{run.get_absolute_url()}#evaluation")
    return redirect(grid.get_absolute_url())


@login_required
@require_http_methods(["GET", "POST"])
def lora_compare(request: HttpRequest) -> HttpResponse:
    """Two LoRAs side by side on the same prompts and seeds."""
    loras = list(selectors.loras_visible_to(request.user).select_related("base_model")[:500])
    usable = [lora for lora in loras if lora.is_usable_by(request.user)]
    context = {"loras": usable, "chosen": [request.GET.get("a", ""), request.GET.get("b", "")], "form": {},
               "grid_prompt": ""}
    if request.method == "POST":
        ids = [request.POST.get("a", ""), request.POST.get("b", "")]
        context["chosen"] = ids
        context["form"] = request.POST
        chosen = [next((lora for lora in usable if str(lora.pk) == i), None) for i in ids]
        try:
            if None in chosen:
                raise RunInputError({"loras": ["Choose two LoRAs you may use."]})
            grid = evaluation.grid_compare(owner=request.user, loras=chosen, **_grid_input(request))
        except (RunInputError, QueueUnavailable) as exc:
            text = _error_text(exc) if isinstance(exc, RunInputError) else str(exc)
            context["error"] = text
            return render(request, "training/runs/compare.html", context, status=400)
        return redirect(grid.get_absolute_url())
    return render(request, "training/runs/compare.html", context)


@login_required
@require_GET
def grid_detail(request: HttpRequest, pk: int) -> HttpResponse:
    grid = _get_grid_for_user(request, pk)
    made = {(cell["row"], cell["col"]) for cell in grid.cells}
    rows = [{"prompt": prompt, "seed": grid.seed + row,
             "cells": [{"col": col, "made": (row, col) in made} for col in range(len(grid.columns))]}
            for row, prompt in enumerate(grid.prompts)]
    context = {"grid": grid, "rows": rows}
    if request.htmx:
        return render(request, "training/runs/_grid_status.html", context)
    return render(request, "training/runs/grid_detail.html", context)


@login_required
@require_GET
def grid_cell(request: HttpRequest, pk: int, row: int, col: int) -> HttpResponse:
    grid = _get_grid_for_user(request, pk)
    key = grid.cell_file(row, col)
    if key is None:
        raise Http404("No such image.")
    return artifact_response(key, filename=f"grid-{grid.pk}-r{row}-c{col}.png", as_attachment=False,
                             content_type="image/png")


@login_required
@require_GET
def grid_download(request: HttpRequest, pk: int) -> HttpResponse:
    grid = _get_grid_for_user(request, pk)
    if not grid.grid_file:
        raise Http404("The grid is not finished.")
    inline = request.GET.get("inline") == "1"
    return artifact_response(grid.grid_file, filename=f"grid-{grid.pk}.png", as_attachment=not inline,
                             content_type="image/png")
