"""The inpainting mask painted in a real browser (static/js/generate.js) reaches the job as a black/white PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage

from gallery.services import image_ingest
from training.models import GenerationJob

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("media_root")]


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
