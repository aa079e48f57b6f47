"""URLs of the OpenAI-compatible API, mounted at /v1/ by imagineer.urls."""

from django.urls import path

from . import openai_api

app_name = "openai"

urlpatterns = [
    path("images/generations", openai_api.images_generations, name="images_generations"),
    path("images/files/<str:token>", openai_api.image_file, name="image_file"),
]
