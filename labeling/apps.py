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
