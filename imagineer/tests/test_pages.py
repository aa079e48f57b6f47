import json
import logging

import pytest


@pytest.mark.django_db
def test_the_home_page_has_navigation_htmx_from_our_static_files_and_csrf_headers(user_client):
    page = user_client.get("/")
    assert page.status_code == 200
    html = page.content.decode()
    for label in ("Gallery", "Albums", "Scrapes", "Labeling", "Training", "Generate"):
        assert f">{label}</a>" in html
    assert "/static/vendor/htmx/htmx.min.js" in html
    assert "hx-headers" in html and "X-CSRFToken" in html
    assert ">Admin</a>" not in html


@pytest.mark.django_db
def test_staff_see_the_admin_link_and_queue_status(staff_client):
    assert ">Admin</a>" in staff_client.get("/").content.decode()
    page = staff_client.get("/admin/rq/")
    assert page.status_code == 200
    for queue in ("default", "scrape", "label", "train", "generate"):
        assert queue.encode() in page.content


@pytest.mark.django_db
def test_queue_status_is_for_staff_only(user_client):
    assert user_client.get("/admin/rq/").status_code == 302


@pytest.mark.django_db
def test_htmx_is_served_from_our_static_files(client):
    response = client.get("/static/vendor/htmx/htmx.min.js")
    assert response.status_code == 200
    assert b"htmx" in b"".join(response.streaming_content)


@pytest.mark.django_db
def test_security_headers_and_csp_allow_only_our_own_files(client):
    response = client.get("/")
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
def test_every_response_carries_a_request_id(client):
    first = client.get("/")["X-Request-ID"]
    second = client.get("/")["X-Request-ID"]
    assert first and second and first != second
    assert client.get("/", HTTP_X_REQUEST_ID="abc-123")["X-Request-ID"] == "abc-123"
    assert client.get("/", HTTP_X_REQUEST_ID="<script>")["X-Request-ID"] != "<script>"


@pytest.mark.django_db
def test_json_log_lines_carry_the_request_id(client):
    from pythonjsonlogger.json import JsonFormatter

    from imagineer.logging import RequestIdFilter

    records = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler = Capture()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter("%(levelname)s %(name)s %(request_id)s %(message)s"))
    logger = logging.getLogger("imagineer.request")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        client.get("/", HTTP_X_REQUEST_ID="req-42")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    line = json.loads(records[-1])
    assert line["request_id"] == "req-42"
    assert line["status"] == 200 and line["path"] == "/"


@pytest.mark.django_db
def test_an_unknown_page_is_a_plain_404(client):
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert b"Traceback" not in response.content


@pytest.mark.django_db
def test_the_nav_marks_the_section_each_page_belongs_to(user_client, user):
    import re

    from django.apps import apps  # imagineer may not import the apps above it, even in its tests

    user_client.post("/gallery/albums/new/", {"name": "Trip"})
    album = apps.get_model("gallery", "Album").objects.get(name="Trip")

    def current(url):
        html = user_client.get(url).content.decode()
        return re.findall(r'aria-current="page">([^<]+)</a>', html)

    assert current("/gallery/") == ["Gallery"]
    assert current("/gallery/mine/") == ["Gallery"]
    assert current("/gallery/albums/") == ["Albums"]
    assert current(f"/gallery/albums/{album.pk}/") == ["Albums"]
    assert current(f"/gallery/albums/{album.pk}/edit/") == ["Albums"]
    assert current("/training/") == ["Training"]
    assert current("/training/loras/") == ["Training"]
    assert current("/training/generate/") == ["Generate"]
    assert current("/training/generations/") == ["Generate"]
    assert current("/labeling/review/") == ["Labeling"]
    assert current("/scrapes/") == ["Scrapes"]
    assert current("/settings/") == []
