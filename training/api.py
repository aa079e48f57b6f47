"""Training JSON API: runs and LoRAs (training/runs/api.py) and generations (training/generation/api.py)."""

from ninja import Router

from .generation.api import router as generation_router
from .runs.api import router as runs_router

router = Router()
router.add_router("", runs_router)
router.add_router("", generation_router)
