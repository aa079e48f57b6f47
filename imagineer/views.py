from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from .forms import ApiTokenForm
from .health import check_health
from .models import ApiToken
from .quotas import quota_usage
from .services import api_token_create, api_token_revoke


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "imagineer/home.html")


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    healthy, report = check_health()
    return JsonResponse(report, status=200 if healthy else 503)


@require_GET
def livez(request: HttpRequest) -> HttpResponse:
    """Liveness only: the process answers. No database or Redis (see /healthz for those)."""
    return HttpResponse("ok", content_type="text/plain")


def _settings_context(request: HttpRequest, **extra) -> dict:
    return {"tokens": ApiToken.objects.filter(user=request.user), "form": ApiTokenForm(),
            "limits": quota_usage(request.user), **extra}


@login_required
def account_settings(request: HttpRequest) -> HttpResponse:
    return render(request, "imagineer/settings.html", _settings_context(request))


@login_required
@require_POST
def token_create(request: HttpRequest) -> HttpResponse:
    form = ApiTokenForm(request.POST)
    if not form.is_valid():
        return render(request, "imagineer/settings.html", _settings_context(request, form=form), status=400)
    token, raw = api_token_create(user=request.user, name=form.cleaned_data["name"])
    # The raw value is shown once, on this response only.
    return render(request, "imagineer/settings.html", _settings_context(request, new_token=raw, new=token))


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    api_token_revoke(token=token)
    messages.success(request, f"Token “{token.name}” revoked.")
    return redirect("account_settings")


def section(request: HttpRequest, title: str, text: str) -> HttpResponse:
    """A page for a section whose app has not grown its own pages yet."""
    return render(request, "imagineer/section.html", {"title": title, "text": text})
