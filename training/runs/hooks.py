"""Registers the training runs' hooks into other apps.

- The gallery's image page gets a panel listing the runs (that the viewer may open) which trained on the
  image, read from each run's frozen dataset snapshot, and a lineage row for every public LoRA trained on it.
- The job reaper removes temporary dataset folders that a killed worker left behind.
"""

from __future__ import annotations

# Runs whose snapshots are read for one image page: the most recent ones of the people concerned.
RUN_SCAN_LIMIT = 200


def _used(run, image) -> bool:
    # The frozen snapshot is the truth: the album may have changed since the run.
    return any(entry.get("image_id") == image.pk for entry in run.dataset)


def image_training_panel(request, image) -> dict:
    from django.db.models import Q

    from .selectors import runs_visible_to

    user = request.user
    if not user.is_authenticated:
        return {"runs": []}
    candidates = (runs_visible_to(user).filter(Q(owner_id=image.owner_id) | Q(owner=user))
                  .select_related("lora").order_by("-pk")[:RUN_SCAN_LIMIT])
    return {"runs": [run for run in candidates if _used(run, image)]}


def public_lora_lineage(image) -> list[dict]:
    from ..models import LoraModel

    loras = (LoraModel.objects.filter(is_public=True, training_run__owner_id=image.owner_id)
             .select_related("training_run").order_by("-pk")[:RUN_SCAN_LIMIT])
    return [{"label": "Trained LoRA", "text": str(lora), "url": lora.get_absolute_url()}
            for lora in loras if _used(lora.training_run, image)]


def image_caption_usage(image, user) -> list[dict]:
    """For labeling's caption history: the runs `user` may open that trained on `image`, with the caption
    each run's frozen snapshot recorded for it."""
    from django.db.models import Q

    from .selectors import runs_visible_to

    if not user.is_authenticated:
        return []
    candidates = (runs_visible_to(user).filter(Q(owner_id=image.owner_id) | Q(owner=user))
                  .order_by("-pk")[:RUN_SCAN_LIMIT])
    usage = []
    for run in candidates:
        entry = next((e for e in run.dataset if e.get("image_id") == image.pk), None)
        if entry is not None:
            usage.append({"name": run.name, "url": run.get_absolute_url(), "caption": entry.get("caption", ""),
                          "created_at": run.created_at, "status": run.get_status_display(),
                          "album_id": entry.get("album_id")})
    return usage


def remove_orphan_datasets() -> int:
    """Reaper hook: temporary dataset folders of runs whose worker died."""
    from .services import remove_orphan_datasets as remove

    return remove()[0]


def register() -> None:
    from gallery import hooks
    from imagineer import jobs

    hooks.detail_panels.append(("training/runs/_image_panel.html", image_training_panel))
    hooks.lineage_hooks.append(public_lora_lineage)
    jobs.reaper_hooks.append(remove_orphan_datasets)

    from labeling import hooks as labeling_hooks

    labeling_hooks.caption_usage_hooks.append(image_caption_usage)
