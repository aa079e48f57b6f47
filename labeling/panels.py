"""The labels panel on the gallery's image page."""

from __future__ import annotations

from .models import Label, LabelKind
from .selectors import training_captions


def labels_panel(request, image) -> dict:
    labels = list(Label.objects.filter(image=image).select_related("created_by").order_by("kind", "source", "value"))
    grouped = {kind: [label for label in labels if label.kind == kind] for kind, _ in LabelKind.choices}
    return {
        "image": image,
        "groups": [(LabelKind(kind).label, kind, items) for kind, items in grouped.items()],
        "manual_caption": next((lbl.value for lbl in labels if lbl.kind == LabelKind.CAPTION
                                and lbl.source == "manual"), ""),
        "training_caption": training_captions([image.pk])[image.pk],
        # Labels, captions, their history and the review task: the owner, staff and editors of a shared album.
        "can_edit": image.can_edit_captions(request.user),
        # Labeling jobs write onto the user's own images only (labeling.services._target_images).
        "can_label": image.can_edit(request.user),
    }
