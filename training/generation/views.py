"""Generation pages: the generate form, the user's queue with live progress, job pages, cancel, regenerate."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from gallery.models import Image
from imagineer.jobs import QueueUnavailable
from imagineer.quotas import QuotaExceeded

from ..ml.generate import SCHEDULERS
from ..models import GenerationJob
from . import selectors, services
from .forms import SLIDER_MAX, SLIDER_MIN, SLIDER_STEP, GenerateForm

RECENT_RESULTS = 12
HISTORY_IMAGES = 24
SOURCE_CHOICES = 12


def _get_job_for_user(request: HttpRequest, pk: int) -> GenerationJob:
    job = get_object_or_404(GenerationJob.objects.select_related("base_model", "owner"), pk=pk)
    if not (request.user.is_staff or job.owner_id == request.user.pk):
        raise Http404("No such generation.")
    return job


def _get_image_for_user(request: HttpRequest, pk: int) -> Image:
    image = get_object_or_404(Image.objects.visible_to(request.user), pk=pk)
    return image


def _queue_context(request: HttpRequest) -> dict:
    active = selectors.active_jobs_with_positions(request.user)
    recent = list(selectors.user_jobs(request.user).finished().order_by("-finished_at", "-pk")[:RECENT_RESULTS])
    for job in recent:
        job.result_images = selectors.job_images(job)
    # The large "current result": the running job's live preview, else the newest finished job's first image.
    running = next((job for job in active if job.status == "running"), None)
    latest = recent[0] if recent else None
    history = [(job, image) for job in recent for image in job.result_images][:HISTORY_IMAGES]
    return {"active": active, "recent": recent, "polling": bool(active), "running": running,
            "latest": latest, "latest_image": latest.result_images[0] if latest and latest.result_images else None,
            "history": history}


def _form_context(request: HttpRequest, form: GenerateForm, notes: list[str] | None = None) -> dict:
    return {
        "form": form,
        "lora_rows": form.lora_rows(),
        "base_models": list(selectors.base_models()),
        "selected_base": form.selected_base_model_pk(),
        "slider": {"min": SLIDER_MIN, "max": SLIDER_MAX, "step": SLIDER_STEP},
        "notes": notes or [],
        "source_choices": list(Image.objects.owned_by(request.user).order_by("-pk")[:SOURCE_CHOICES]),
        **_queue_context(request),
    }


@login_required
@require_http_methods(["GET", "POST"])
def generate(request: HttpRequest) -> HttpResponse:
    """GET: the form (prefilled from ?job=, ?image=, with ?lora= ticked); POST: validate, queue, come back here."""
    if request.method == "POST":
        form = GenerateForm(request.POST, user=request.user)
        status = 400
        if form.is_valid():
            try:
                job = services.generation_create(user=request.user, **form.generation_kwargs())
            except QuotaExceeded as exc:
                form.add_error(None, str(exc))
                status = 429
            except services.GenerationInputError as exc:
                form.add_service_error(exc)
            except QueueUnavailable as exc:
                form.add_error(None, str(exc))
                status = 503
            else:
                messages.success(request, f"Queued generation {job.pk} (seed {job.seed}).")
                return redirect(f"{reverse('training:generate')}?job={job.pk}")
        return render(request, "training/generation/generate.html", _form_context(request, form), status=status)
    initial: dict = {}
    weights: dict[int, float] = {}
    notes: list[str] = []
    if request.GET.get("job", "").isdigit():
        initial, weights, notes = selectors.settings_from_job(_get_job_for_user(request, int(request.GET["job"])),
                                                              request.user)
    elif request.GET.get("image", "").isdigit():
        image = _get_image_for_user(request, int(request.GET["image"]))
        initial, weights, notes = selectors.settings_from_image(image, request.user)
    if request.GET.get("source", "").isdigit():  # "use as source" (image to image) from a result or image
        # Any image the user may open is a source, a shared album's included (the service's rule).
        source = get_object_or_404(Image.objects.accessible_to(request.user), pk=int(request.GET["source"]))
        initial.update(source_image=source.pk, mode=request.GET.get("mode") if request.GET.get("mode") in (
            "img2img", "inpaint") else "img2img")
        initial.pop("mask_png", None)
    if request.GET.get("lora", "").isdigit():  # "generate with this LoRA" from a LoRA's page
        lora = selectors.usable_loras(request.user).filter(pk=int(request.GET["lora"])).first()
        if lora is None:
            raise Http404("No such LoRA.")
        weights.setdefault(lora.pk, lora.default_weight)
        initial.setdefault("base_model", lora.base_model_id)
    form = GenerateForm(user=request.user, initial=initial, lora_weights=weights)
    return render(request, "training/generation/generate.html", _form_context(request, form, notes))


@login_required
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    """The user's queue and latest results: the partial the generate page polls."""
    return render(request, "training/generation/_queue.html", _queue_context(request))


@login_required
@require_GET
def generation_list(request: HttpRequest) -> HttpResponse:
    jobs = selectors.user_jobs(request.user).order_by("-created_at", "-pk")
    page = Paginator(jobs, 30).get_page(request.GET.get("page"))
    positions = selectors.queue_positions()
    for job in page:
        job.position = positions.get(job.pk)
    return render(request, "training/generation/list.html", {"page": page})


def _detail_context(job: GenerationJob) -> dict:
    job.position = selectors.queue_position(job)
    return {
        "job": job,
        "images": selectors.job_images(job) if job.is_finished else [],
        "loras": list(selectors.lora_entries(job)),
        "sampler": SCHEDULERS[job.scheduler].a1111 if job.scheduler in SCHEDULERS else job.scheduler,
    }


@login_required
@require_GET
def generation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job = _get_job_for_user(request, pk)
    template = "training/generation/_status.html" if request.htmx else "training/generation/detail.html"
    return render(request, template, _detail_context(job))


@login_required
@require_GET
def generation_preview(request: HttpRequest, pk: int) -> HttpResponse:
    """The running job's latest live preview (a small PNG approximated from the latents); 404 before the first.

    A page that polled just before the job ended may still ask for it after the preview was cleared: then the
    finished job's first image stands in (or nothing, 204, when it made none), never an error."""
    job = _get_job_for_user(request, pk)
    data = bytes(GenerationJob.objects.filter(pk=job.pk).values_list("preview_png", flat=True).first() or b"")
    if not data:
        job.refresh_from_db(fields=["status"])
        if not job.is_finished:
            raise Http404("No preview yet.")
        image = next(iter(selectors.job_images(job)), None)
        return redirect(image.preview_url()) if image is not None else HttpResponse(status=204)
    response = HttpResponse(data, content_type="image/png")
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


@login_required
@require_POST
def generation_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    job = _get_job_for_user(request, pk)
    if services.generation_cancel(job=job):
        messages.info(request, "Cancelling: it stops before its next denoising step.")
    job.refresh_from_db()
    if request.htmx:
        if request.POST.get("from") == "queue":
            return render(request, "training/generation/_queue.html", _queue_context(request))
        return render(request, "training/generation/_status.html", _detail_context(job))
    return redirect(reverse("training:generate") if request.POST.get("from") == "queue" else job.get_absolute_url())


def _rerun(request: HttpRequest, job: GenerationJob) -> HttpResponse:
    try:
        new = services.generation_rerun(user=request.user, job=job)
    except (services.GenerationInputError, QuotaExceeded, QueueUnavailable) as exc:
        messages.error(request, str(exc))
        return redirect(f"{reverse('training:generate')}?job={job.pk}" if job.owner_id == request.user.pk
                        else reverse("training:generate"))
    messages.success(request, f"Queued generation {new.pk} with the same settings and seed {new.seed}.")
    return redirect(new)


@login_required
@require_POST
def generation_regenerate(request: HttpRequest, pk: int) -> HttpResponse:
    return _rerun(request, _get_job_for_user(request, pk))


@login_required
@require_http_methods(["GET", "POST"])
def image_regenerate(request: HttpRequest, image_pk: int) -> HttpResponse:
    """Regenerate a generated image you can see: GET asks to confirm, POST queues the same settings and seed."""
    image = _get_image_for_user(request, image_pk)
    job = selectors.generation_of_image(image)
    if job is None:
        raise Http404("This image was not generated here.")
    if request.method == "POST":
        return _rerun(request, job)
    context = _detail_context(job)
    context.update(image=image, own_job=request.user.is_staff or job.owner_id == request.user.pk)
    return render(request, "training/generation/regenerate.html", context)
