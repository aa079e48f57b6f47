from django.urls import path

from imagineer.views import section

app_name = "gallery"
urlpatterns = [
    path("", section, {"title": "Gallery", "text": "Your images."}, name="index"),
    path("albums/", section, {"title": "Albums", "text": "Your albums."}, name="albums"),
]
