"""The inpainting mask painted in a real browser (static/js/generate.js) reaches the job as a black/white PNG."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from gallery.services import image_ingest
from training.models import GenerationJob

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("media_root")]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def page(monkeypatch):
    """Debian's chromium through Playwright; every page error or console error (a CSP refusal) is collected."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (scripts/setup.sh --test installs it as root)")
    # Playwright's sync API keeps an event loop in this thread between calls; the ORM calls here are synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.errors = []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
        yield page
        context.close()
        browser.close()


def test_a_mask_painted_on_the_canvas_is_sent_with_the_inpainting(live_server, page, user, base_model, redis_conn,
                                                                  client):
    buffer = io.BytesIO()
    PILImage.new("RGB", (64, 64), "green").save(buffer, format="PNG")
    source = image_ingest(owner=user, data=buffer.getvalue(), filename="green.png",
                          make_derivatives_inline=True).image
    client.force_login(user)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value,
                               "url": live_server.url}])
    page.goto(f"{live_server.url}/training/generate/?source={source.pk}&mode=inpaint")
    page.fill("#id_prompt", "a red square")
    canvas = page.locator("#mask-canvas")
    canvas.wait_for(state="visible")
    page.wait_for_function("document.getElementById('mask-canvas').width > 0")
    box = canvas.bounding_box()
    # A stroke across the left third of the image.
    page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.5, steps=5)
    page.mouse.up()
    page.click("summary:has-text('Advanced settings')")
    page.fill("#id_steps", "2")
    page.click("form button:has-text('Generate')")
    page.wait_for_url("**/training/generate/?job=*")

    assert page.errors == []
    job = GenerationJob.objects.get()
    assert (job.mode, job.source_image_id) == ("inpaint", source.pk)
    mask = np.asarray(PILImage.open(io.BytesIO(bytes(job.mask_png))).convert("L"))
    height, width = mask.shape
    assert mask[height // 2, int(width * 0.17)] > 128  # painted
    assert mask[height // 2, int(width * 0.8)] < 128 and mask[5, 5] < 128  # untouched
