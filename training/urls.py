"""Training URLs: runs, base models and LoRAs (training/runs/) and generation (training/generation/)."""

from .generation.urls import urlpatterns as generation_patterns
from .runs.urls import urlpatterns as run_patterns

app_name = "training"
urlpatterns = [*run_patterns, *generation_patterns]
