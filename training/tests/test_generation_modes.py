"""img2img, inpainting and hires fix through the service, the worker body, the page and the lineage."""

from __future__ import annotations

import base64
import hashlib
import io
import re

import numpy as np
import pytest
from django.test import Client
from PIL import Image as PILImage
from PIL import ImageDraw

from gallery.services import image_ingest
from imagineer.models import JobStatus
from training.generation import selectors, services
from training.generation.jobs import run_generation_inline
from training.generation.services import GenerationInputError, generation_create, generation_rerun
from training.ml.a1111 import a1111_parameters, parse_a1111_parameters, png_bytes_with_parameters, read_png_parameters
from training.models import GenerationJob
from training.tests.generation_fixtures import FAST, file_bytes, pixels

pytestmark = pytest.mark.usefixtures("media_root")
URL = "/training/generate/"


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _picture(colour="green", size=(32, 32)):
    image = PILImage.new("RGB", size, colour)
    ImageDraw.Draw(image).ellipse((4, 4, size[0] - 5, size[1] - 5), fill="white")
    return image


def _upload(owner, colour="green", public=False, size=(32, 32)):
    return image_ingest(owner=owner, data=_png(_picture(colour, size)), filename=f"{colour}.png",
                        is_public=public, make_derivatives_inline=True).image


def _mask(size=(32, 32), box=(8, 8, 23, 23)) -> bytes:
    mask = PILImage.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return _png(mask)


def _run(job) -> GenerationJob:
    run_generation_inline(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    return job


# --- the service: access and validation ------------------------------------------------------------------------


def test_another_users_private_image_cannot_be_a_source_and_nothing_is_created(user, other_user, base_model):
    private = _upload(other_user, "blue")
    with pytest.raises(GenerationInputError) as caught:
        generation_create(user=user, prompt="x", mode="img2img", source_image=private.pk, strength=0.5,
                          enqueue=False, **FAST)
    assert "source_image" in caught.value.fields and "that you may use" in str(caught.value)
    with pytest.raises(GenerationInputError):
        generation_create(user=user, prompt="x", mode="img2img", source_image=999999, enqueue=False, **FAST)
    assert not GenerationJob.objects.exists()


def test_public_images_of_others_and_own_images_can_be_sources(user, other_user, base_model):
    public = _upload(other_user, "blue", public=True)
    mine = _upload(user, "red")
    for source in (public, mine):
        job = generation_create(user=user, prompt="x", mode="img2img", source_image=source, strength=0.5,
                                enqueue=False, **FAST)
        assert (job.mode, job.source_image, job.strength) == ("img2img", source, 0.5)


@pytest.mark.parametrize(("mask", "field", "text"), [
    (None, "mask", "paint the area"),
    (b"not a png", "mask", "not a readable PNG"),
    (_png(PILImage.new("L", (32, 32), 0)), "mask", "the mask is empty"),
])
def test_inpainting_needs_a_real_painted_mask(user, base_model, mask, field, text):
    source = _upload(user)
    with pytest.raises(GenerationInputError) as caught:
        generation_create(user=user, prompt="x", mode="inpaint", source_image=source, mask_png=mask, strength=0.8,
                          enqueue=False, **FAST)
    assert text in caught.value.fields[field]
    assert not GenerationJob.objects.exists()


def test_mode_settings_are_refused_with_the_field_they_concern(user, base_model):
    source = _upload(user)
    cases = [({"mode": "img2img", "source_image": source, "strength": 1.5}, "strength"),
             ({"mode": "img2img"}, "source_image"),
             ({"hires_scale": 9.0}, "hires_scale"),
             ({"mode": "img2img", "source_image": source, "hires_scale": 2.0}, "hires_scale")]
    for kwargs, field in cases:
        with pytest.raises(GenerationInputError) as caught:
            generation_create(user=user, prompt="x", enqueue=False, **FAST, **kwargs)
        assert field in caught.value.fields, kwargs


def test_an_empty_size_follows_the_sources_aspect_ratio_at_the_native_size(user, base_model):
    source = _upload(user, size=(200, 100))
    job = generation_create(user=user, prompt="x", mode="img2img", source_image=source, steps=2, enqueue=False)
    assert (job.width, job.height) == (base_model.native_size, base_model.native_size // 2)


# --- the worker: images, metadata, lineage, rerun -------------------------------------------------------------


@pytest.fixture
def worker_db(transactional_db):
    return transactional_db


def test_img2img_records_its_source_and_strength_in_png_metadata_and_lineage(worker_db, user, base_model,
                                                                             user_client):
    source = _upload(user)
    job = _run(generation_create(user=user, prompt="a red square", mode="img2img", source_image=source,
                                 strength=0.5, seed=4, enqueue=False, **FAST))
    image = selectors.job_images(job)[0]
    params = parse_a1111_parameters(read_png_parameters(file_bytes(image)))

    assert params["fields"]["Denoising strength"] == "0.5" and (params["width"], params["height"]) == (32, 32)
    # The file itself names its source by content: the hash of the source file's bytes.
    assert params["fields"]["Init image hash"] == hashlib.sha256(file_bytes(source)).hexdigest()[:10]
    assert "Mask hash" not in params["fields"]
    assert image.source_detail["mode"] == "img2img" and image.source_detail["source_image"] == source.pk
    html = user_client.get(image.get_absolute_url()).content.decode()
    assert "Image to image" in html and f"Image {source.pk}" in html and "Denoising strength" in html


def test_strength_0_gives_the_source_through_the_vae_and_1_ignores_it(worker_db, user, base_model):
    red, blue = _upload(user, "red"), _upload(user, "blue")
    def made(source, strength):
        job = _run(generation_create(user=user, prompt="p", mode="img2img", source_image=source, strength=strength,
                                     seed=9, enqueue=False, **FAST))
        return pixels(selectors.job_images(job)[0])

    txt = pixels(selectors.job_images(_run(generation_create(user=user, prompt="p", seed=9, enqueue=False,
                                                              **FAST)))[0])
    assert np.array_equal(made(red, 1.0), txt) and np.array_equal(made(blue, 1.0), txt)
    # At 0 no step runs: two sources give two different pictures, neither the text-to-image one.
    zero_red, zero_blue = made(red, 0.0), made(blue, 0.0)
    assert np.abs(zero_red - zero_blue).mean() > 5 and np.abs(zero_red - txt).mean() > 5


def test_inpainting_keeps_the_unmasked_pixels_of_the_source(worker_db, user, base_model):
    source = _upload(user, "green")
    job = _run(generation_create(user=user, prompt="a red square", mode="inpaint", source_image=source,
                                 mask_png=_mask(), strength=1.0, seed=3, enqueue=False, **FAST))
    image = selectors.job_images(job)[0]
    out, original = pixels(image), np.asarray(_picture("green"), dtype=np.int16)
    inside = np.zeros((32, 32), dtype=bool)
    inside[8:24, 8:24] = True

    assert np.abs(out - original)[~inside].max() == 0
    assert np.abs(out - original)[inside].mean() > 10
    params = parse_a1111_parameters(read_png_parameters(file_bytes(image)))
    assert params["fields"]["Denoising strength"] == "1" and image.source_detail["masked"] is True
    assert params["fields"]["Init image hash"] == hashlib.sha256(file_bytes(source)).hexdigest()[:10]
    assert params["fields"]["Mask hash"] == hashlib.sha256(_mask()).hexdigest()[:10]


def test_hires_fix_outputs_the_upscaled_size_and_records_a1111_hires_fields(worker_db, user, base_model):
    job = _run(generation_create(user=user, prompt="a red square", hires_scale=2.0, hires_steps=2,
                                 hires_strength=0.6, seed=5, enqueue=False, **FAST))
    image = selectors.job_images(job)[0]
    params = parse_a1111_parameters(read_png_parameters(file_bytes(image)))

    assert (image.width, image.height) == (64, 64)
    assert (params["width"], params["height"]) == (32, 32)  # A1111's Size is the first pass's
    assert params["fields"]["Hires upscale"] == "2" and params["fields"]["Hires steps"] == "2"
    assert params["fields"]["Denoising strength"] == "0.6" and params["fields"]["Hires upscaler"] == "Lanczos"
    assert job.step == job.total_steps == 2 + 1  # two steps, then int(2 × 0.6) in the second pass
    assert image.source_detail["hires"] == {"scale": 2.0, "steps": 2, "strength": 0.6}


def test_regenerate_repeats_the_mode_with_its_source_and_mask(worker_db, user, base_model):
    source = _upload(user, "green")
    first = _run(generation_create(user=user, prompt="p", mode="inpaint", source_image=source, mask_png=_mask(),
                                   strength=0.7, seed=8, enqueue=False, **FAST))
    again = _run(generation_rerun(user=user, job=first, enqueue=False))

    assert (again.mode, again.source_image, again.strength, bytes(again.mask_png)) == (
        "inpaint", source, 0.7, bytes(first.mask_png))
    assert selectors.job_images(again) == selectors.job_images(first)  # the same bytes: the gallery's image back


def test_a_live_preview_is_written_while_denoising_and_cleared_at_the_end(worker_db, user, base_model,
                                                                         monkeypatch):
    seen = []
    original = services._Progress.on_preview

    def record(self, step, picture):
        original(self, step, picture)
        row = GenerationJob.objects.get(pk=self.ctx.job.pk)
        seen.append((row.preview_step, bytes(row.preview_png)[:8]))

    monkeypatch.setattr(services._Progress, "on_preview", record)
    job = _run(generation_create(user=user, prompt="p", seed=1, enqueue=False,
                                 **{**FAST, "steps": 2 * services.PREVIEW_EVERY + 1}))

    assert [step for step, _ in seen] == [services.PREVIEW_EVERY, 2 * services.PREVIEW_EVERY]
    assert all(head == b"\x89PNG\r\n\x1a\n" for _, head in seen)
    assert bytes(job.preview_png) == b""
    # A page that polled just before the end and asks for the preview now gets the finished image instead.
    client = Client()
    client.force_login(user)
    late = client.get(f"/training/generations/{job.pk}/preview.png")
    assert late.status_code == 302 and late["Location"] == selectors.job_images(job)[0].preview_url()


# --- the page --------------------------------------------------------------------------------------------------


def _post(client, **overrides):
    from training.models import BaseModel

    data = {"prompt": "a red square", "negative_prompt": "", "base_model": BaseModel.default().pk,
            "scheduler": "euler", "steps": 2, "guidance_scale": 7, "seed": "", "width": 32, "height": 32, "count": 1,
            "mode": "txt2img",
            "strength": 0.75, "hires_scale": 1, "hires_steps": 0, "hires_strength": 0.5, **overrides}
    return client.post(URL, data)


def test_the_page_queues_an_inpainting_with_the_painted_mask(user_client, user, base_model, redis_conn):
    source = _upload(user)
    data_url = "data:image/png;base64," + base64.b64encode(_mask()).decode()
    response = _post(user_client, mode="inpaint", source_image=source.pk, mask=data_url, strength=0.6)

    assert response.status_code == 302, re.findall(r"error[^<]*<[^<]*<[^<]*", response.content.decode())
    job = GenerationJob.objects.get()
    assert (job.mode, job.source_image, job.strength, bytes(job.mask_png)) == ("inpaint", source, 0.6, _mask())


def test_a_refused_source_is_shown_beside_its_field(user_client, other_user, base_model, redis_conn):
    private = _upload(other_user, "blue")
    response = _post(user_client, mode="img2img", source_image=private.pk)
    html = response.content.decode()

    assert response.status_code == 400 and not GenerationJob.objects.exists()
    assert re.search(r'id="id_source_image"[^>]*>\s*<ul class="errorlist"[^>]*><li>there is no image #\d+ that you '
                     r"may use", html)
    bad_mask = _post(user_client, mode="inpaint", source_image=_upload(other_user, "red", public=True).pk,
                     mask="data:image/png;base64,!!!")
    assert bad_mask.status_code == 400 and "The mask could not be read" in bad_mask.content.decode()


def test_use_these_settings_restores_mode_source_strength_and_mask(worker_db, user_client, user, base_model):
    source = _upload(user)
    job = generation_create(user=user, prompt="p", mode="inpaint", source_image=source, mask_png=_mask(),
                            strength=0.65, seed=2, enqueue=False, **FAST)
    html = user_client.get(f"{URL}?job={job.pk}").content.decode()

    assert re.search(r'value="inpaint"[^>]*checked', html)
    assert re.search(rf'name="source_image"[^>]*value="{source.pk}"', html)
    assert re.search(r'name="strength"[^>]*value="0.65"', html)
    assert 'value="data:image/png;base64,' + base64.b64encode(_mask()).decode() + '"' in html
    assert source.preview_url() in html


def test_use_these_settings_from_an_a1111_png_restores_the_hires_fix(user_client, user, base_model):
    text = a1111_parameters("a castle", "", 20, "euler", 7, 5, 32, 32, model_name="tiny",
                            extra={"Denoising strength": "0.45", "Hires upscale": "1.5", "Hires steps": 10})
    image = image_ingest(owner=user, data=png_bytes_with_parameters(_picture(), text), filename="a.png").image
    html = user_client.get(f"{URL}?image={image.pk}").content.decode()

    assert re.search(r'name="hires_scale"[^>]*value="1.5"', html)
    assert re.search(r'name="hires_strength"[^>]*value="0.45"', html)
    assert re.search(r'name="hires_steps"[^>]*value="10"', html)


def test_use_as_source_opens_img2img_and_other_users_private_images_are_404(user_client, user, other_user,
                                                                            base_model):
    mine, theirs = _upload(user), _upload(other_user, "blue")
    html = user_client.get(f"{URL}?source={mine.pk}&mode=inpaint").content.decode()

    assert re.search(r'value="inpaint"[^>]*checked', html) and 'id="mask-canvas"' in html
    assert user_client.get(f"{URL}?source={theirs.pk}").status_code == 404
    assert "<script>" not in html and " style=" not in html


def test_the_live_preview_is_served_to_its_owner_only(user_client, other_client, user, base_model):
    job = generation_create(user=user, prompt="p", enqueue=False, **FAST)
    url = f"/training/generations/{job.pk}/preview.png"
    assert user_client.get(url).status_code == 404  # nothing yet
    GenerationJob.objects.filter(pk=job.pk).update(preview_png=_mask(), preview_step=3)

    response = user_client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response.content == _mask() and response["Cache-Control"] == "no-store"
    assert other_client.get(url).status_code == 404


def test_errors_are_shown_beside_the_fields_they_concern(user_client, base_model, redis_conn):
    response = _post(user_client, steps=999, width=33)
    html = response.content.decode()

    assert response.status_code == 400 and not GenerationJob.objects.exists()
    assert re.search(r'id="id_steps"[^>]*>\s*<ul class="errorlist"[^>]*><li>steps must be between 1 and', html)
    assert re.search(r'id="id_width"[^>]*>\s*<ul class="errorlist"[^>]*><li>width must be a multiple of 8', html)


def test_the_json_api_queues_an_inpainting_and_refuses_a_private_source(client, user, other_user, base_model,
                                                                        redis_conn):
    from imagineer.services import api_token_create

    auth = {"HTTP_AUTHORIZATION": f"Bearer {api_token_create(user=user, name='t')[1]}"}
    source = _upload(user)
    body = {"prompt": "p", **FAST, "mode": "inpaint", "source_image": source.pk, "strength": 0.6,
            "mask_png_base64": base64.b64encode(_mask()).decode()}
    response = client.post("/api/generations", body, content_type="application/json", **auth)
    assert response.status_code == 201, response.content
    data = response.json()
    assert (data["mode"], data["source_image"], data["strength"]) == ("inpaint", source.pk, 0.6)
    assert bytes(GenerationJob.objects.get(pk=data["id"]).mask_png) == _mask()

    private = _upload(other_user, "blue")
    refused = client.post("/api/generations", {**body, "source_image": private.pk}, content_type="application/json",
                          **auth)
    assert refused.status_code == 400 and "that you may use" in refused.content.decode()
    assert GenerationJob.objects.count() == 1


# --- album members use the shared album's images as sources, as they see them on the image page ----------------


def test_a_shared_albums_private_image_is_a_source_for_its_members_and_no_one_else(user, other_user, make_user,
                                                                                   base_model, client):
    from gallery import services as gallery_services
    from gallery import sharing

    private = _upload(other_user, "blue")
    album = gallery_services.album_create(owner=other_user, name="Shared")
    gallery_services.album_add_images(album=album, images=[private])
    sharing.member_set(album=album, username=user.username, role="viewer")
    stranger = make_user("carol")

    for who, allowed in ((user, True), (stranger, False)):
        client.force_login(who)
        page = client.get(f"/gallery/images/{private.pk}/").status_code
        assert page == (200 if allowed else 404)
        assert client.get(f"{URL}?source={private.pk}&mode=inpaint").status_code == page
        if allowed:
            job = generation_create(user=who, prompt="x", mode="img2img", source_image=private.pk, strength=0.5,
                                    enqueue=False, **FAST)
            assert job.source_image == private
            # "Use these settings" keeps the source for the member.
            values = selectors.settings_from_job(job, who)[0]
            assert values.get("source_image") == private.pk
        else:
            with pytest.raises(GenerationInputError) as caught:
                generation_create(user=who, prompt="x", mode="img2img", source_image=private.pk, strength=0.5,
                                  enqueue=False, **FAST)
            assert "source_image" in caught.value.fields
    assert GenerationJob.objects.count() == 1

    # No longer a member: the image is the owner's alone again.
    sharing.member_remove(album=album, member_id=album.members.get(user=user).pk)
    with pytest.raises(GenerationInputError):
        generation_create(user=user, prompt="x", mode="img2img", source_image=private.pk, strength=0.5,
                          enqueue=False, **FAST)
