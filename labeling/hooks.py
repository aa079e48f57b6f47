"""Extension points higher apps fill in their AppConfig.ready(), so labeling never imports them.

- `caption_usage_hooks`: functions (image, user) -> list of {"name", "url", "caption", "created_at",
  "status", "album_id"}: the training runs `user` may open whose frozen snapshot holds `image`, with the caption
  the snapshot recorded for it. Training registers one; the caption history page shows them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

caption_usage_hooks: list[Callable[[Any, Any], list[dict]]] = []
