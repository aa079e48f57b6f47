from django.urls import path

from imagineer.views import section

urlpatterns = [
    path("generate/", section, {"title": "Generate", "text": "Text-to-image generation."}, name="generate"),
]
