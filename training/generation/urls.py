from django.urls import path

from . import views

urlpatterns = [
    path("generate/", views.generate, name="generate"),
    path("generations/", views.generation_list, name="generation_list"),
    path("generations/queue/", views.queue, name="generation_queue"),
    path("generations/<int:pk>/", views.generation_detail, name="generation_detail"),
    path("generations/<int:pk>/preview.png", views.generation_preview, name="generation_preview"),
    path("generations/<int:pk>/cancel/", views.generation_cancel, name="generation_cancel"),
    path("generations/<int:pk>/regenerate/", views.generation_regenerate, name="generation_regenerate"),
    path("generations/images/<int:image_pk>/regenerate/", views.image_regenerate, name="image_regenerate"),
]
