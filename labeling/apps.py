from django.apps import AppConfig


class LabelingConfig(AppConfig):
    name = "labeling"
    verbose_name = "Labeling"

    def ready(self) -> None:
        # Labels plug into the gallery through its hooks, so gallery never imports labeling.
        from django.db.models import Q

        from gallery import hooks

        from .models import Label, LabelKind, ReviewState
        from .panels import labels_panel

        hooks.search_hooks.append(
            lambda term: Q(labels__value__icontains=term) & ~Q(labels__review_state=ReviewState.REJECTED)
        )
        hooks.set_tag_filter(
            lambda tag: Label.objects.usable().filter(kind=LabelKind.TAG, value=tag.strip().lower())
            .values("image_id")
        )
        hooks.detail_panels.append(("labeling/_labels_panel.html", labels_panel))
        hooks.bulk_actions.append(("Label selected", "labeling:job_start"))
        # A scrape's alt text and title become captions with source "scraper" (pending review).
        from .services import label_add_scraped

        hooks.found_text_hooks.append(label_add_scraped)

        from imagineer import jobs

        jobs.reaper_hooks.append(remove_orphan_containers)


def remove_orphan_containers() -> int:
    """Containers a killed labeling worker left behind (older than any batch can run) are removed."""
    import os

    from django.conf import settings

    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return 0
    from .backends.container import remove_stale_containers

    return remove_stale_containers(older_than=settings.LABEL_CONTAINER_TIMEOUT + 60)
