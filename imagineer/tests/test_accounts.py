import pytest
from django.contrib.auth import get_user_model


@pytest.mark.django_db
def test_signup_creates_an_account_and_logs_in(client):
    page = client.get("/accounts/signup/")
    assert page.status_code == 200
    assert b"Sign Up" in page.content or b"Sign up" in page.content
    assert b'class="topbar"' in page.content  # our own base template
    response = client.post(
        "/accounts/signup/",
        {"email": "carol@example.com", "password1": "a-Strong-pass-42", "password2": "a-Strong-pass-42"},
    )
    assert response.status_code == 302
    user = get_user_model().objects.get(email="carol@example.com")
    assert user.username  # generated from the email
    assert client.get("/settings/").status_code == 200


@pytest.mark.django_db
def test_signup_rejects_mismatched_passwords_with_a_message(client):
    response = client.post(
        "/accounts/signup/",
        {"email": "dave@example.com", "password1": "a-Strong-pass-42", "password2": "different-pass-42"},
    )
    assert response.status_code == 200
    assert b"same password" in response.content
    assert not get_user_model().objects.filter(email="dave@example.com").exists()


@pytest.mark.django_db
def test_login_with_email_or_username_and_logout(client, make_user):
    make_user("erin", password="a-Strong-pass-42")
    for login in ("erin@example.com", "erin"):
        response = client.post("/accounts/login/", {"login": login, "password": "a-Strong-pass-42"})
        assert response.status_code == 302, response.content
        assert client.get("/settings/").status_code == 200
        response = client.post("/accounts/logout/")
        assert response.status_code == 302
        assert client.get("/settings/").status_code == 302


@pytest.mark.django_db
def test_login_with_a_wrong_password_fails(client, make_user):
    make_user("frank", password="a-Strong-pass-42")
    response = client.post("/accounts/login/", {"login": "frank", "password": "nope-nope-nope"})
    assert response.status_code == 200
    assert b"not correct" in response.content


@pytest.mark.django_db
def test_google_login_is_hidden_unless_configured(client):
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert b"Google" not in page.content


@pytest.mark.django_db
def test_signup_can_be_closed_by_setting(client, settings):
    settings.ACCOUNT_ALLOW_REGISTRATION = False
    response = client.get("/accounts/signup/")
    assert b"closed" in response.content.lower()


@pytest.mark.django_db
def test_google_login_appears_when_configured(client, settings):
    settings.GOOGLE_LOGIN_ENABLED = True
    settings.SOCIALACCOUNT_PROVIDERS = {"google": {
        "SCOPE": ["profile", "email"], "APPS": [{"client_id": "id-123", "secret": "s", "key": ""}]}}
    page = client.get("/accounts/login/")
    assert b"Google" in page.content
    start = client.post("/accounts/google/login/")
    # allauth redirects to Google's consent page; we never follow it (no network here).
    assert start.status_code == 302 and start["Location"].startswith("https://accounts.google.com/")
    assert "client_id=id-123" in start["Location"]
