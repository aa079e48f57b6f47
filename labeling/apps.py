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
        from .selectors import image_label_summaries

        hooks.set_image_label_summaries(image_label_summaries)
        hooks.bulk_actions.append(("Label selected", "labeling:job_start"))
        # A scrape's alt text and title become captions with source "scraper" (pending review).
        from .services import label_add_scraped

        hooks.found_text_hooks.append(label_add_scraped)

        from imagineer import jobs

        jobs.reaper_hooks.append(remove_orphan_containers)


def remove_orphan_containers() -> int:
    """Remove labeler containers that no worker is waiting for any more (a worker killed mid-batch).

    Run by the reaper after it has failed the stale jobs: when no claude-docker job is running, every
    labeler container is an orphan and goes at once. While one runs, its container cannot be told
    apart from a leftover, so only containers older than any batch can run are removed.
    """
    import os
    from datetime import UTC, datetime

    from django.conf import settings

    from imagineer.models import JobStatus

    from .models import LabelingJob

    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return 0
    from .backends.container import ContainerBackend, remove_stale_containers

    # Taken before the query: a container created after it belongs to a job that started since.
    now = datetime.now(UTC)
    if LabelingJob.objects.filter(backend=ContainerBackend.name, status=JobStatus.RUNNING).exists():
        return remove_stale_containers(older_than=settings.LABEL_CONTAINER_TIMEOUT + 60, now=now)
    return remove_stale_containers(now=now)
