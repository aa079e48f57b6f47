from django.urls import path

from imagineer.views import section

app_name = "labeling"
urlpatterns = [
    path("", section, {"title": "Labeling", "text": "Captions, tags and review."}, name="index"),
]
