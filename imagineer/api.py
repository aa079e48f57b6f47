"""The JSON API (django-ninja). Apps add their routers in `imagineer.urls`.

Authentication: `Authorization: Bearer <token>` with a token from the settings
page, or the browser session (with CSRF) for pages that call the API.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from ninja import Field, NinjaAPI, Schema
from ninja.pagination import LimitOffsetPagination
from ninja.security import HttpBearer, django_auth

from .models import ApiToken, hash_token


class Pagination(LimitOffsetPagination):
    """limit/offset with bounds the database can take (a huge offset is a 500 on SQLite otherwise)."""

    class Input(Schema):
        limit: int = Field(100, ge=1, le=500)
        offset: int = Field(0, ge=0, le=10**9)


class TokenAuth(HttpBearer):
    def authenticate(self, request, token: str):
        if not token:
            return None
        api_token = ApiToken.objects.usable().select_related("user").filter(token_hash=hash_token(token)).first()
        if api_token is None:
            return None
        now = timezone.now()
        # Writing on every call would turn reads into writes; a minute's precision is enough.
        if api_token.last_used_at is None or now - api_token.last_used_at > timedelta(minutes=1):
            ApiToken.objects.filter(pk=api_token.pk).update(last_used_at=now)
        request.user = api_token.user
        request.api_token = api_token
        return api_token.user


api = NinjaAPI(
    title="Imagineer API",
    version="1",
    description="Images, labels, scrapes, training runs and generations. Authenticate with a bearer token "
    "created on your account settings page.",
    auth=[TokenAuth(), django_auth],
    urls_namespace="api",
    docs_url="/docs",
)


class MeOut(Schema):
    id: int
    username: str
    email: str
    is_staff: bool


@api.get("/me", response=MeOut, summary="The authenticated user")
def me(request):
    return request.user
