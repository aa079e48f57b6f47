from django.urls import path

from . import views

app_name = "labeling"
urlpatterns = [
    path("", views.index, name="index"),
    path("start/", views.job_start, name="job_start"),
    path("jobs/<int:pk>/", views.job_detail, name="job_detail"),
    path("jobs/<int:pk>/cancel/", views.job_cancel_view, name="job_cancel"),
    path("review/", views.review, name="review"),
    path("review/decide/", views.review_action, name="review_action"),
    path("analytics/", views.analytics, name="analytics"),
    path("albums/<int:pk>/export.zip", views.export, name="export"),
    path("images/<int:pk>/tags/", views.tag_add, name="tag_add"),
    path("images/<int:pk>/caption/", views.caption_set, name="caption_set"),
    path("labels/<int:pk>/edit/", views.label_edit, name="label_edit"),
    path("labels/<int:pk>/delete/", views.label_delete, name="label_delete"),
    path("tags/suggest/", views.tag_suggest, name="tag_suggest"),
]
