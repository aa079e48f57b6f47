from django.contrib import admin
from django.urls import include, path

from . import views
from .api import api

admin.site.site_header = "Imagineer administration"
admin.site.site_title = "Imagineer admin"

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
    path("gallery/", include("gallery.urls")),
    path("labeling/", include("labeling.urls")),
    path("scrapes/", include("scraping.urls")),
    path("training/", include("training.urls")),
]
