from django.urls import path

from imagineer.views import section

app_name = "training"
urlpatterns = [
    path("", section, {"title": "Training", "text": "LoRA training runs."}, name="index"),
    path("generate/", section, {"title": "Generate", "text": "Text-to-image generation."}, name="generate"),
]
