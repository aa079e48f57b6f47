from importlib import import_module

from django.contrib import admin
from django.urls import include, path

from . import views
from .admin_login import ThrottledAdminAuthenticationForm
from .api import api

# Each app may contribute a ninja Router in <app>/api.py; its paths sit directly under /api/.
for _app in ("gallery", "labeling", "scraping", "training"):
    try:
        _module = import_module(f"{_app}.api")
    except ModuleNotFoundError as exc:
        if exc.name != f"{_app}.api":
            raise
        continue
    api.add_router("/", _module.router)

admin.site.site_header = "Imagineer administration"
admin.site.site_title = "Imagineer admin"
# The admin's password check counts against the site login's rate limits (see admin_login.py).
admin.site.login_form = ThrottledAdminAuthenticationForm

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("livez", views.livez, name="livez"),
    path("accounts/", include("allauth.urls")),
    path("settings/", views.account_settings, name="account_settings"),
    path("settings/tokens/", views.token_create, name="token_create"),
    path("settings/tokens/<int:pk>/revoke/", views.token_revoke, name="token_revoke"),
    path("admin/rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("v1/", include("training.generation.openai_urls")),  # OpenAI-compatible images API (bearer tokens)
    path("gallery/", include("gallery.urls")),
    path("labeling/", include("labeling.urls")),
    path("scrapes/", include("scraping.urls")),
    path("training/", include("training.urls")),
]
