from django.urls import path

from imagineer.views import section

urlpatterns = [
    path("", section, {"title": "Training", "text": "LoRA training runs."}, name="index"),
]
