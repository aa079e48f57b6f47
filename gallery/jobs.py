"""RQ entry points for the gallery (queue `default`)."""

from .models import Image
from .services import image_make_derivatives


def make_image_derivatives(image_id: int) -> None:
    image = Image.objects.filter(pk=image_id).first()
    if image is not None:
        image_make_derivatives(image=image)


def embed_image(image_id: int) -> int:
    """CLIP vector of one image for semantic search (gallery/semantic)."""
    from .semantic.services import embed

    return embed([image_id])
