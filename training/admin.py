from .generation import admin as generation_admin  # noqa: F401 - registers the generation admin
from .runs import admin as runs_admin  # noqa: F401 - registers base models, runs and LoRAs
