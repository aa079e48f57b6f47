"""/admin/login/ is throttled like the site's login: allauth's `login_failed` limits, kept in Django's cache."""

from __future__ import annotations

import secrets

import pytest
from django.test import Client, RequestFactory

PASSWORD = "the-Right-pass-42"  # noqa: S105


@pytest.fixture
def admin_login(make_user):
    """A staff account with a fresh name, a client from a fresh address, and no rate-limit history for either.

    Only this test's limits are cleared (through allauth, whatever cache is configured): clearing the
    whole cache would empty a Redis database that other test runs share.
    """
    from allauth.account.adapter import get_adapter
    from allauth.core import ratelimit

    name = f"root{secrets.token_hex(4)}"
    make_user(name, staff=True, is_superuser=True, password=PASSWORD)
    address = f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"
    request = RequestFactory().post("/", REMOTE_ADDR=address)
    adapter = get_adapter(request)
    for login in (name, f"{name}@example.com"):
        key = adapter._get_login_attempts_cache_key(request, username=login)
        ratelimit.clear(request, action="login_failed", key=key)
    ratelimit.clear(request, action="login")

    class Login:
        username = name
        client = Client(REMOTE_ADDR=address)

        @classmethod
        def admin(cls, password: str):
            return cls.client.post("/admin/login/?next=/admin/", {"username": name, "password": password})

        @classmethod
        def site(cls, password: str):
            return cls.client.post("/accounts/login/", {"login": name, "password": password})

        @classmethod
        def logged_in(cls) -> bool:
            return "_auth_user_id" in cls.client.session

    return Login


def test_the_right_password_signs_in_to_the_admin(admin_login):
    response = admin_login.admin(PASSWORD)

    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert admin_login.logged_in()
    assert admin_login.client.get("/admin/").status_code == 200


def test_many_wrong_passwords_then_the_right_one_is_refused(admin_login):
    first = admin_login.admin("wrong-password-0")
    assert first.status_code == 200 and b"Please enter the correct username and password" in first.content

    for attempt in range(1, 15):
        assert admin_login.admin(f"wrong-password-{attempt}").status_code == 200

    response = admin_login.admin(PASSWORD)

    assert response.status_code == 200
    assert b"Too many failed login attempts" in response.content
    assert not admin_login.logged_in()
    assert admin_login.client.get("/admin/").status_code == 302  # still sent to the login page


def test_failures_at_the_site_login_count_at_the_admin_login_too(admin_login):
    for attempt in range(5):
        assert admin_login.site(f"wrong-password-{attempt}").status_code == 200

    response = admin_login.admin(PASSWORD)

    assert b"Too many failed login attempts" in response.content
    assert not admin_login.logged_in()


def test_failures_at_the_admin_login_count_at_the_site_login_too(admin_login):
    for attempt in range(5):
        admin_login.admin(f"wrong-password-{attempt}")

    response = admin_login.site(PASSWORD)

    assert response.status_code == 200 and b"Too many failed login attempts" in response.content
    assert not admin_login.logged_in()


def test_a_non_staff_account_with_the_right_password_gets_no_admin(admin_login, make_user):
    make_user("plain", password=PASSWORD)

    response = admin_login.client.post("/admin/login/", {"username": "plain", "password": PASSWORD})

    assert response.status_code == 200 and b"staff account" in response.content
    assert not admin_login.logged_in()
