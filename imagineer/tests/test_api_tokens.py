import re

import pytest

from imagineer.models import ApiToken, hash_token


def _create_token(client, name="script"):
    response = client.post("/settings/tokens/", {"name": name})
    assert response.status_code == 200
    match = re.search(rb'data-testid="new-token">([^<]+)<', response.content)
    assert match, "the new token is shown once"
    return match.group(1).decode()


@pytest.mark.django_db
def test_a_created_token_authenticates_the_api_and_is_stored_hashed(user_client, user, client):
    raw = _create_token(user_client)
    token = ApiToken.objects.get(user=user)
    assert token.token_hash == hash_token(raw)
    assert raw not in str(ApiToken.objects.values_list(flat=True))
    client.logout()
    response = client.get("/api/me", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200
    assert response.json()["username"] == user.username
    token.refresh_from_db()
    assert token.last_used_at is not None


@pytest.mark.django_db
def test_the_token_list_never_shows_the_raw_token_again(user_client):
    raw = _create_token(user_client)
    page = user_client.get("/settings/")
    assert raw.encode() not in page.content
    assert raw[:12].encode() in page.content


@pytest.mark.django_db
def test_a_revoked_token_is_refused(user_client, user, client):
    raw = _create_token(user_client)
    token = ApiToken.objects.get(user=user)
    response = user_client.post(f"/settings/tokens/{token.pk}/revoke/")
    assert response.status_code == 302
    client.logout()
    assert client.get("/api/me", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401


@pytest.mark.django_db
def test_nobody_revokes_another_users_token(user_client, user, other_client):
    _create_token(user_client)
    token = ApiToken.objects.get(user=user)
    assert other_client.post(f"/settings/tokens/{token.pk}/revoke/").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


@pytest.mark.django_db
def test_the_api_refuses_missing_and_wrong_tokens(client):
    assert client.get("/api/me").status_code == 401
    assert client.get("/api/me", HTTP_AUTHORIZATION="Bearer imgr_wrong").status_code == 401


@pytest.mark.django_db
def test_a_token_of_a_deactivated_user_is_refused(user_client, user, client):
    raw = _create_token(user_client)
    user.is_active = False
    user.save()
    client.logout()
    assert client.get("/api/me", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401


@pytest.mark.django_db
def test_openapi_docs_are_served(client):
    assert client.get("/api/docs").status_code == 200
    schema = client.get("/api/openapi.json").json()
    assert "/api/me" in schema["paths"]


@pytest.mark.django_db
def test_an_empty_token_name_is_a_form_error(user_client):
    response = user_client.post("/settings/tokens/", {"name": ""})
    assert response.status_code == 400
    assert b"required" in response.content
    assert not ApiToken.objects.exists()
