"""Run pages for choosing and judging a LoRA: register a kept checkpoint as a LoRA of its own."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from . import services
from .views import _get_run_for_user


@login_required
@require_POST
def run_checkpoint_lora(request: HttpRequest, pk: int, step: int) -> HttpResponse:
    """“Use this checkpoint”: the LoRA of that kept step, registered beside the run's final one."""
    run = _get_run_for_user(request, pk)
    if run.owner_id != request.user.pk and not request.user.is_staff:
        return redirect(run.get_absolute_url())
    try:
        lora = services.lora_from_checkpoint(run=run, step=step)
    except services.RunStateError as exc:
        messages.error(request, str(exc))
        return redirect(run.get_absolute_url())
    messages.success(request, f"Registered the LoRA of step {step} as “{lora.name}”.")
    return redirect(lora.get_absolute_url())
