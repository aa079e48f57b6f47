"""Review per image in a real browser (chromium through Playwright): the keyboard drives it through
static/js/review_task.js, with the page's CSP in force (no inline scripts)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gallery import services as gallery_services
from imagineer.testing import image_bytes
from labeling.models import Label, LabelKind, ReviewState

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("media_root")]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def browser_page(live_server, client, user, monkeypatch, settings):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (scripts/setup.sh --test installs it as root)")
    # Playwright's sync API keeps an event loop in this thread; the test's own ORM reads are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    client.force_login(user)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(base_url=live_server.url)
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}])
        page = context.new_page()
        page.set_default_timeout(15_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        yield page
        context.close()
        browser.close()
    assert not [e for e in errors if "favicon" not in e], errors


def test_the_keyboard_accepts_edits_and_moves_through_the_album(browser_page, user, ingest):
    album = gallery_services.album_create(owner=user, name="Set")
    images = [ingest(user, image_bytes("PNG", seed=s), filename=f"{s}.png") for s in range(2)]
    gallery_services.album_add_images(album=album, images=images)
    for image in images:
        Label.objects.create(image=image, kind=LabelKind.CAPTION, value="cat cat", source="captioner")
        Label.objects.create(image=image, kind=LabelKind.TAG, value="red theme", source="tagger", confidence=0.99)
        Label.objects.create(image=image, kind=LabelKind.TAG, value="long hair", source="tagger", confidence=0.8)
    page = browser_page
    first = f"/labeling/review/images/{images[0].pk}/?album={album.pk}"
    page.goto(first)

    def state(image, value):
        return Label.objects.get(image=image, value=value).review_state

    page.keyboard.press("ArrowDown")  # the first row: the caption
    page.keyboard.press("ArrowDown")  # the second: "red theme"
    with page.expect_navigation():
        page.keyboard.press("n")
    assert state(images[0], "red theme") == ReviewState.REJECTED
    assert state(images[0], "cat cat") == ReviewState.PENDING

    page.keyboard.press("ArrowDown")
    page.keyboard.press("e")
    page.keyboard.press("Control+a")
    page.keyboard.type("a grey cat")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    edited = Label.objects.get(image=images[0], kind=LabelKind.CAPTION)
    assert (edited.value, edited.source, edited.reviewed_by) == ("a grey cat", "manual", user)

    with page.expect_navigation():
        page.keyboard.press("a")  # accept every pending label, then on to the next image
    assert f"/labeling/review/images/{images[1].pk}/" in page.url
    assert state(images[0], "long hair") == ReviewState.APPROVED
    assert state(images[0], "red theme") == ReviewState.REJECTED  # decided labels stay decided
    assert set(Label.objects.filter(image=images[1]).values_list("review_state", flat=True)) == {"pending"}

    with page.expect_navigation():
        page.keyboard.press("ArrowLeft")
    assert page.url.endswith(first)
