"""Writes for the project-level rows (API tokens)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from .models import ApiToken, hash_token


@transaction.atomic
def api_token_create(*, user, name: str) -> tuple[ApiToken, str]:
    """Create a token and return it with its raw value, which is shown once and never stored."""
    raw = ApiToken.generate_raw()
    token = ApiToken.objects.create(
        user=user, name=name.strip()[:100] or "token", prefix=raw[:12], token_hash=hash_token(raw)
    )
    return token, raw


def api_token_revoke(*, token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
