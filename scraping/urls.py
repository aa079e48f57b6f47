from django.urls import path

from imagineer.views import section

app_name = "scraping"
urlpatterns = [
    path("", section, {"title": "Scrapes", "text": "Crawls that bring images into albums."}, name="index"),
]
