"""The whole loop in a real browser (Debian's chromium driven by Playwright) against a real server,
real Redis, real workers and a real container engine: sign up, upload, scrape a site served on
127.0.0.1, label (local and container backends), edit a caption and approve labels, train a LoRA,
generate with it, and follow the result's lineage back to the scraped page.

Screenshots of every stage go to test-artifacts/e2e/.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from imagineer.testing import image_bytes
from tests.deployment import ROOT, Deployment, send_body

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.containers]

ARTIFACTS = ROOT / "test-artifacts" / "e2e"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
JOB_TIMEOUT_MS = 240_000


def _picture(seed: int, fmt: str = "PNG") -> bytes:
    return image_bytes(fmt, size=(160, 120), seed=seed)


class _Site(BaseHTTPRequestHandler):
    """A small site: two pages with six pictures, each with alt text."""

    pages = {
        "/": '<h1>Foxes</h1><a href="/more.html">more</a>'
             + "".join(f'<img src="/img/fox{i}.png" alt="a fox number {i}" title="Fox {i}">' for i in range(3)),
        "/more.html": "<h1>More foxes</h1>"
                      + "".join(f'<img src="/img/fox{i}.jpg" alt="another fox {i}">' for i in range(3, 6)),
    }

    def do_GET(self):  # noqa: N802
        if self.path in self.pages:
            body, kind = f"<html><body>{self.pages[self.path]}</body></html>".encode(), "text/html"
        elif m := re.fullmatch(r"/img/fox(\d)\.(png|jpg)", self.path):
            body = _picture(100 + int(m.group(1)), "PNG" if m.group(2) == "png" else "JPEG")
            kind = "image/png" if m.group(2) == "png" else "image/jpeg"
        elif self.path == "/robots.txt":
            body, kind = b"User-agent: *\nAllow: /\n", "text/plain"
        else:
            self.send_error(404)
            return
        send_body(self, body, kind)

    def log_message(self, *args):
        pass


@pytest.fixture
def site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture
def podman():
    from labeling.testing.image import import_test_image
    from labeling.testing.podman import podman_problem, start_podman_service

    problem = podman_problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so the browser test must run, but {problem}", pytrace=False)
        pytest.skip(problem)
    service = start_podman_service()
    client = service.client()
    image = import_test_image(client)
    yield service, image.tags[0]
    client.close()
    service.stop()


@pytest.fixture
def deployment(tmp_path, redis_server, podman):
    service, image_tag = podman
    credentials = tmp_path / "claude"
    credentials.mkdir()
    (credentials / ".credentials.json").write_text('{"claudeAiOauth": {"accessToken": "e2e"}}')
    (credentials / ".credentials.json").chmod(0o644)
    deployment = Deployment(tmp_path, redis_url=redis_server.url, extra_env={
        "IMAGINEER_SCRAPE_ALLOW_PRIVATE": "1", "DOCKER_HOST": service.base_url,
        "IMAGINEER_LABEL_IMAGE": image_tag, "IMAGINEER_LABEL_NETWORK": "none",
        "IMAGINEER_CLAUDE_CREDENTIALS": str(credentials),
    })
    deployment.prepare()
    deployment.manage("build_tiny_model", "--if-missing")
    deployment.start_web()
    deployment.start_worker("worker", ["default", "scrape", "label"])
    deployment.start_worker("gpu-worker", ["train", "generate"], warm=True)
    yield deployment
    deployment.stop()


@contextlib.contextmanager
def _browser(deployment):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("CI is set, so the browser test must run, but chromium is not installed", pytrace=False)
        pytest.skip("chromium is not installed (scripts/setup.sh --test installs it as root)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=deployment.url)
        page = context.new_page()
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        yield page
        context.close()
        browser.close()
    # No script errors and no CSP violations anywhere in the journey.
    assert not [e for e in errors if "favicon" not in e], errors


@pytest.fixture
def page(deployment):
    with _browser(deployment) as page:
        yield page


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def open_image_page(page) -> None:
    """A grid tile opens the viewer over the grid; its "Image page" link goes to the permanent page."""
    page.click("#grid .tile a.open >> nth=0")
    page.click("#viewer .viewer-link")
    page.wait_for_selector("aside h1")


def wait_for_status(page, text: str = "Succeeded") -> None:
    """Job pages poll their status partial with HTMX; wait until it shows the final badge."""
    page.wait_for_selector(f".badge:has-text('{text}')", timeout=JOB_TIMEOUT_MS)


def test_the_whole_loop_in_a_browser(page, deployment, site, tmp_path):
    # 1. Sign up.
    page.goto("/accounts/signup/")
    page.fill("#id_email", "erin@example.com")
    page.fill("#id_password1", "a-Strong-pass-42")
    page.fill("#id_password2", "a-Strong-pass-42")
    page.click("form button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))
    assert page.locator(".nav").inner_text().count("Log out") == 1
    shot(page, "01-signed-up")

    # 2. Upload three images with the drag-and-drop page (the file picker triggers the same uploads).
    files = []
    for i in range(3):
        path = tmp_path / f"upload{i}.png"
        path.write_bytes(_picture(i))
        files.append(str(path))
    page.goto("/gallery/upload/")
    page.set_input_files("#id_files", files)
    expect(page.locator("#upload-list li.ok")).to_have_count(3, timeout=60_000)
    shot(page, "02-uploaded")

    # 3. Scrape the local site into a new album.
    page.goto("/scrapes/")
    page.fill("#id_start_url", site)
    page.fill("#id_album_name", "Foxes")
    for field, value in (("#id_min_width", "1"), ("#id_min_height", "1"), ("#id_min_bytes", "1")):
        page.fill(field, value)
    page.click("summary:has-text('Scope and politeness')")
    page.fill("#id_delay", "0")
    page.click("form.scrape-form button[type=submit]")
    wait_for_status(page)
    expect(page.locator("#items")).to_contain_text("Imported (6)", timeout=20_000)
    shot(page, "03-scraped")

    # 4. Label the album with the local backend, then with Claude in a container.
    for backend in ("local", "claude-docker"):
        page.goto("/labeling/")
        page.select_option("#id_album", label="Foxes")
        page.select_option("#id_backend", backend)
        page.click("text=Start labeling")
        wait_for_status(page)
        shot(page, f"04-labelled-{backend}")

    # 5. Edit a caption on an image page and approve the pending labels in the review queue.
    page.goto("/gallery/albums/")
    page.click("text=Foxes")
    open_image_page(page)
    page.fill("#labels-panel textarea[name=text]", "a red fox in the snow, hand-written")
    page.click("#labels-panel >> text=Save caption")
    page.wait_for_selector("#labels-panel >> text=a red fox in the snow, hand-written")
    shot(page, "05a-caption")
    page.goto("/labeling/review/")
    page.click("#review-select-all")
    page.click("text=Approve selected")
    page.wait_for_selector("text=approved")
    shot(page, "05b-approved")

    # 6. Train a LoRA on the album (tiny model, a few steps).
    page.goto("/training/runs/new/")
    page.check("fieldset.albums >> text=Foxes")
    page.fill("#id_name", "Fox LoRA")
    page.select_option("#id_preset", "")
    for field, value in (("#id_steps", "6"), ("#id_batch_size", "2"), ("#id_resolution", "64")):
        page.fill(field, value)
    page.click("summary:has-text('Advanced')")
    page.fill("#id_checkpoint_every", "3")
    if page.locator("#id_epochs").count():
        page.fill("#id_epochs", "")
    page.click("text=Start training")
    wait_for_status(page)
    shot(page, "06-trained")

    # 7. Generate with the new LoRA.
    page.goto("/training/generate/")
    page.fill("#id_prompt", "a fox, watercolour")
    page.check("input[name=lora] >> nth=0")
    page.click("summary:has-text('Advanced settings')")
    page.fill("#id_steps", "4")
    page.fill("#id_width", "64")
    page.fill("#id_height", "64")
    page.fill("#id_seed", "1234")
    page.click("form button:has-text('Generate')")
    wait_for_status(page)
    shot(page, "07-generated")

    # 8. Find the result in the gallery and follow its lineage back to the scraped page.
    page.goto("/gallery/mine/?source=generated")
    open_image_page(page)
    lineage = page.locator(".lineage").inner_text()
    assert "Generated" in lineage and "1234" in lineage and "a fox, watercolour" in lineage
    shot(page, "08a-generated-image")
    # Generated image → its LoRA → the training run → the album it trained on → a scraped image → its page.
    page.click(".lineage a:has-text('Fox LoRA')")
    page.click("main a[href^='/training/runs/']")
    expect(page.locator("h1")).to_have_text("Fox LoRA")
    shot(page, "08b-training-run")
    page.click("a:has-text('Foxes')")
    open_image_page(page)
    lineage = page.locator(".lineage").inner_text()
    assert "Scraped" in lineage and site in lineage
    shot(page, "08c-scraped-source")


@pytest.fixture
def gallery_deployment(tmp_path, redis_server):
    """Web and the default queue only: enough for the gallery's pages and thumbnails."""
    deployment = Deployment(tmp_path, redis_url=redis_server.url, extra_env={"IMAGINEER_GALLERY_PAGE_SIZE": "6"})
    deployment.prepare()
    deployment.create_user("gina", "a-Strong-pass-42")
    deployment.start_web()
    deployment.start_worker("worker", ["default"])
    yield deployment
    deployment.stop()


def test_viewer_order_keys_and_range_selection(gallery_deployment, tmp_path):
    deployment = gallery_deployment
    # Nine pictures of different shapes (one only 64 px wide), added in order: two pages of six.
    sizes = [(160, 120), (120, 160), (140, 100), (200, 100), (150, 150), (160, 90), (90, 160), (64, 40), (100, 140)]
    for n, (w, h) in enumerate(sizes):
        path = tmp_path / f"shape{n}.png"
        path.write_bytes(image_bytes("PNG", size=(w, h), seed=300 + n))
    deployment.shell(
        "from pathlib import Path\n"
        "from django.contrib.auth import get_user_model\n"
        "from gallery.services import image_ingest\n"
        "u = get_user_model().objects.get(username='gina')\n"
        f"for n in range({len(sizes)}):\n"
        f"    p = Path({str(tmp_path)!r}) / f'shape{{n}}.png'\n"
        "    image_ingest(owner=u, data=p.read_bytes(), filename=p.name, title=f'shape {n}', "
        "make_derivatives_inline=True)\n"
    )
    with _browser(deployment) as page:
        page.goto("/accounts/login/")
        page.fill("#id_login", "gina")
        page.fill("#id_password", "a-Strong-pass-42")
        page.click("form button[type=submit]")
        page.wait_for_url(re.compile(r"/$"))
        page.set_viewport_size({"width": 900, "height": 500})
        page.goto("/gallery/mine/")
        tiles = page.locator("#grid .tile")
        expect(tiles).to_have_count(6)
        order = tiles.evaluate_all("ts => ts.map(t => t.dataset.id)")
        # Newest first, and the 64 px picture is never shown wider than itself.
        small = page.locator("#grid .tile[data-w='64']")
        assert small.bounding_box()["width"] <= 64.5
        assert page.locator("#grid .tile").nth(0).bounding_box()["height"] > 60
        shot(page, "10-justified-grid")

        # Open the second tile from a scrolled grid; arrows walk the grid's order; 0 zooms; Esc returns.
        page.evaluate("window.scrollTo(0, 120)")
        scrolled = page.evaluate("window.scrollY")
        assert scrolled > 0
        page.locator("#grid .tile a.open").nth(1).click()
        viewer = page.locator("#viewer")
        expect(viewer).to_be_visible()
        expect(viewer).to_have_attribute("data-id", order[1])
        assert page.url.endswith(f"/gallery/images/{order[1]}/")
        page.keyboard.press("ArrowRight")
        expect(viewer).to_have_attribute("data-id", order[2])
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowLeft")
        expect(viewer).to_have_attribute("data-id", order[0])
        page.keyboard.press("ArrowLeft")  # nothing before the first
        expect(viewer).to_have_attribute("data-id", order[0])
        page.keyboard.press("0")
        expect(viewer).to_have_class(re.compile(r"actual-size"))
        # 100% loads the full-size re-encode, which shows the picture's own pixels.
        full = page.locator("#viewer .viewer-stage img")
        expect(full).to_have_attribute("src", f"/gallery/images/{order[0]}/full")
        width = int(page.locator(f"#grid .tile[data-id='{order[0]}']").get_attribute("data-w"))
        deadline = time.monotonic() + 15
        while full.evaluate("i => i.complete ? i.naturalWidth : -1") == -1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert full.evaluate("i => i.naturalWidth") == width
        shot(page, "11-viewer")
        # Walk past the last loaded tile: the next page loads and the viewer moves on into it.
        for expected in order[1:]:
            page.keyboard.press("ArrowRight")
            expect(viewer).to_have_attribute("data-id", expected)
        page.keyboard.press("ArrowRight")
        expect(tiles).to_have_count(9)
        all_ids = tiles.evaluate_all("ts => ts.map(t => t.dataset.id)")
        assert all_ids[:6] == order and len(set(all_ids)) == 9
        expect(viewer).to_have_attribute("data-id", all_ids[6])
        page.keyboard.press("Escape")
        expect(viewer).to_be_hidden()
        page.wait_for_url(re.compile(r"/gallery/mine/$"))
        assert abs(page.evaluate("window.scrollY") - scrolled) <= 1
        # The permanent link still opens the image page itself.
        page.goto(f"/gallery/images/{order[2]}/")
        expect(page.locator("aside h1")).to_have_text("shape " + str(len(sizes) - 3))

        # Selection: click one box, shift-click another: the range between is selected; select all loaded.
        page.goto("/gallery/mine/")
        boxes = page.locator("#grid .tile .select")
        boxes.nth(1).click()
        boxes.nth(4).click(modifiers=["Shift"])
        checked = boxes.evaluate_all("bs => bs.map(b => b.checked)")
        assert checked == [False, True, True, True, True, False]
        expect(page.locator("#bulk-count")).to_have_text("4")
        # While selecting, a click on a tile selects it instead of opening the viewer.
        page.locator("#grid .tile a.open").nth(5).click()
        expect(page.locator("#viewer")).to_have_count(0)
        expect(page.locator("#bulk-count")).to_have_text("5")
        shot(page, "12-range-selection")
        # Bulk actions work on the selection.
        page.select_option("#bulk-form select[name=action]", "make_public")
        page.click("#bulk-form button[type=submit]")
        page.wait_for_url(re.compile(r"/gallery/mine/"))
        public = deployment.shell(
            "from gallery.models import Image\n"
            "print(sorted(Image.objects.filter(is_public=True).values_list('pk', flat=True)))"
        ).strip()
        assert public == str(sorted(int(i) for i in order[1:6]))
        page.click("#select-all")
        expect(page.locator("#bulk-count")).to_have_text("6")
