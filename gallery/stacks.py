"""Stacks: near duplicates kept together under one chosen image, so the grid shows one tile per stack.

A stack is its top image plus the images whose `stack_top` points at it (one level: stacking a stack under
another image moves all its members). Only the owner stacks their own images. A trashed top no longer hides
its members (they show again until it is restored).
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q

from .models import Image, NearDuplicatePair


class StackError(ValueError):
    """Bad stacking request; the message is for the person who asked."""


def unstacked_q(prefix: str = "") -> Q:
    """Images the grid shows as tiles: stack tops and unstacked images (and members of a trashed top)."""
    return Q(**{f"{prefix}stack_top__isnull": True}) | Q(**{f"{prefix}stack_top__trashed_at__isnull": False})


@transaction.atomic
def stack_create(*, user, top_id: int, ids) -> int:
    """Stack the user's images `ids` under `top_id` (one of theirs); returns how many are now under it."""
    ids = {int(i) for i in ids} - {int(top_id)}
    top = Image.objects.select_for_update().filter(pk=top_id, owner=user).first()
    if top is None:
        raise StackError("Choose one of your images as the top of the stack.")
    mine = list(Image.objects.filter(owner=user, pk__in=ids).values_list("pk", flat=True))
    if not mine:
        raise StackError("Choose at least one other image of yours to stack.")
    # Whole stacks move together, and the new top leaves any stack it was in.
    Image.objects.filter(Q(pk__in=mine) | Q(stack_top_id__in=mine) | Q(stack_top_id=top.pk)).exclude(
        pk=top.pk).update(stack_top=top)
    if top.stack_top_id is not None:
        top.stack_top = None
        top.save(update_fields=["stack_top", "updated_at"])
    return Image.objects.filter(stack_top=top).count()


@transaction.atomic
def stack_dissolve(*, user, top_id: int) -> int:
    return Image.objects.filter(owner=user, stack_top_id=top_id).update(stack_top=None)


def stack_remove(*, user, ids) -> int:
    return Image.objects.filter(owner=user, pk__in=list(ids), stack_top__isnull=False).update(stack_top=None)


def stack_on_import(image: Image) -> Image | None:
    """Put a newly imported image under the stack of its closest earlier near duplicate, if any.

    Uses the pairs recorded on arrival (gallery/neardup.py), so it costs one indexed query."""
    pair = (NearDuplicatePair.objects.filter(Q(image=image) | Q(other=image), owner_id=image.owner_id,
                                             distance__lte=settings.GALLERY_NEAR_DUPLICATE_DISTANCE)
            .filter(Q(image__trashed_at__isnull=True) & Q(other__trashed_at__isnull=True))
            .order_by("distance", "image_id").first())
    if pair is None:
        return None
    other = Image.objects.get(pk=pair.other_id if pair.image_id == image.pk else pair.image_id)
    top = other.stack_top if other.stack_top_id and other.stack_top.trashed_at is None else other
    image.stack_top = top
    image.save(update_fields=["stack_top", "updated_at"])
    return top


def stack_sizes(ids) -> dict[int, int]:
    """How many images are stacked under each of `ids` (tops only appear when they have some)."""
    rows = (Image.objects.filter(stack_top_id__in=list(ids), trashed_at__isnull=True).values("stack_top_id")
            .annotate(n=Count("pk")).values_list("stack_top_id", "n"))
    return dict(rows)
