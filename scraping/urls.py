from django.urls import path

from . import views

app_name = "scraping"
urlpatterns = [
    path("", views.index, name="index"),
    path("start/", views.start, name="start"),
    path("jobs/<int:pk>/", views.job_detail, name="job_detail"),
    path("jobs/<int:pk>/items/", views.job_items, name="job_items"),
    path("jobs/<int:pk>/cancel/", views.job_cancel_view, name="job_cancel"),
    path("jobs/<int:pk>/rerun/", views.job_rerun, name="job_rerun"),
    path("jobs/<int:pk>/log.txt", views.job_log, name="job_log"),
]
