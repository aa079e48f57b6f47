from django.urls import path

from . import views, views_captions, views_review

app_name = "labeling"
urlpatterns = [
    path("", views.index, name="index"),
    path("start/", views.job_start, name="job_start"),
    path("jobs/<int:pk>/", views.job_detail, name="job_detail"),
    path("jobs/<int:pk>/cancel/", views.job_cancel_view, name="job_cancel"),
    path("review/", views.review, name="review"),
    path("review/decide/", views.review_action, name="review_action"),
    path("review/images/", views_review.review_image_first, name="review_image_first"),
    path("review/images/<int:pk>/", views_review.review_image, name="review_image"),
    path("review/images/<int:pk>/decide/", views_review.review_image_decide, name="review_image_decide"),
    path("analytics/", views.analytics, name="analytics"),
    path("albums/<int:pk>/export.zip", views.export, name="export"),
    path("images/<int:pk>/tags/", views.tag_add, name="tag_add"),
    path("images/<int:pk>/caption/", views.caption_set, name="caption_set"),
    path("labels/<int:pk>/edit/", views.label_edit, name="label_edit"),
    path("labels/<int:pk>/delete/", views.label_delete, name="label_delete"),
    path("tags/suggest/", views.tag_suggest, name="tag_suggest"),
    path("albums/<int:pk>/captions/", views_captions.caption_tools, name="caption_tools"),
    path("albums/<int:pk>/captions/trigger/", views_captions.trigger_word_set, name="trigger_word_set"),
    path("albums/<int:pk>/captions/template/", views_captions.template_set, name="template_set"),
    path("albums/<int:pk>/captions/replace/", views_captions.find_replace, name="find_replace"),
    path("albums/<int:pk>/captions/tags/", views_captions.bulk_tag, name="bulk_tag"),
    path("albums/<int:pk>/captions/rename/", views_captions.rename_tags, name="rename_tags"),
    path("images/<int:pk>/captions/history/", views_captions.caption_history, name="caption_history"),
]
