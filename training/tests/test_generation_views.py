"""Generation pages: the form with its LoRA picker, the queue with positions, access, cancel, use/regenerate."""

from __future__ import annotations

import re

import pytest

from gallery.services import image_ingest
from imagineer.models import JobStatus
from training.generation import selectors
from training.generation.jobs import run_generation_inline
from training.generation.services import generation_create
from training.ml.a1111 import a1111_parameters, png_bytes_with_parameters
from training.models import GenerationJob
from training.tests.generation_fixtures import FAST

pytestmark = pytest.mark.usefixtures("media_root")
HTMX = {"HTTP_HX_REQUEST": "true"}
URL = "/training/generate/"


def _post(client, **overrides):
    data = {"prompt": "a red square", "negative_prompt": "", "base_model": "", "scheduler": "euler", "steps": 2,
            "guidance_scale": 7, "seed": "", "width": 32, "height": 32, "count": 1, **overrides}
    return client.post(URL, data)


def test_the_generate_page_has_the_form_a_lora_picker_with_sliders_and_advanced_settings(user_client,
                                                                                         registry_loras):
    html = user_client.get(URL).content.decode()

    assert 'name="prompt"' in html and 'name="negative_prompt"' in html and 'name="base_model"' in html
    assert "<details" in html and "Advanced settings" in html
    assert f'type="range" name="weight_{registry_loras["style"].pk}"' in html
    assert f'value="{registry_loras["early"].pk}"' in html, "public LoRAs of others can be picked"
    assert f'value="{registry_loras["secret"].pk}"' not in html, "private LoRAs of others are not offered"
    assert 'data-kind="sdxl"' in html and "js/generate.js" in html
    assert "<script>" not in html and " style=" not in html


def test_posting_the_form_queues_a_job_for_the_user_with_the_slider_weights(user_client, user, registry_loras,
                                                                             redis_conn):
    style, early = registry_loras["style"], registry_loras["early"]
    base = registry_loras["style"].base_model
    response = _post(user_client, base_model=base.pk, lora=[style.pk, early.pk], **{f"weight_{style.pk}": "0.35",
                                                                                  f"weight_{early.pk}": ""})

    job = GenerationJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"{URL}?job={job.pk}"
    assert job.owner == user and job.status == JobStatus.QUEUED and (job.width, job.steps) == (32, 2)
    assert [(e.lora.name, e.weight) for e in selectors.lora_entries(job)] == [("style", 0.35), ("early", 0.6)]
    page = user_client.get(response["Location"]).content.decode()
    assert "position 1 in the queue" in page and 'hx-trigger="every 2s"' in page
    assert 'value="0.35"' in page, "the form comes back with the job's settings"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"prompt": ""}, "Write a prompt"),
    ({"width": 33}, "width must be a multiple of 8"),
    ({"width": 8192}, "between 8 and 2048"),
    ({"steps": 0}, "steps must be between 1 and 150"),
    ({"steps": 5000}, "steps must be between 1 and 150"),
    ({"steps": "many"}, "Enter a whole number"),
])
def test_bad_form_input_is_explained_and_nothing_is_queued(user_client, base_model, overrides, message):
    response = _post(user_client, base_model=base_model.pk, **overrides)

    assert response.status_code == 400
    assert message in response.content.decode()
    assert not GenerationJob.objects.exists()


def test_the_form_refuses_another_users_private_lora_and_a_lora_of_another_kind(user_client, registry_loras):
    base = registry_loras["style"].base_model
    forged = _post(user_client, base_model=base.pk, lora=[registry_loras["secret"].pk])
    wrong_kind = _post(user_client, base_model=base.pk, lora=[registry_loras["xl"].pk])

    assert forged.status_code == 400 and f"no LoRA #{registry_loras['secret'].pk} that you may use" in \
        forged.content.decode()
    assert wrong_kind.status_code == 400 and "cannot be used with tiny" in wrong_kind.content.decode()
    assert not GenerationJob.objects.exists()


def test_the_queue_limit_is_a_429_with_the_reason(user_client, user, base_model, settings, redis_conn):
    settings.GENERATE_MAX_QUEUED_PER_USER = 1
    generation_create(user=user, prompt="x", **FAST)
    response = _post(user_client, base_model=base_model.pk)

    assert response.status_code == 429 and "the limit is 1" in response.content.decode()
    assert GenerationJob.objects.count() == 1


def test_the_queue_partial_shows_positions_and_stops_polling_when_nothing_waits(user_client, user, other_user,
                                                                                base_model, redis_conn):
    generation_create(user=other_user, prompt="theirs", **FAST)
    mine = generation_create(user=user, prompt="mine", **FAST)
    partial = user_client.get("/training/generations/queue/", **HTMX).content.decode()
    assert "position 2 in the queue" in partial and "every 2s" in partial and "theirs" not in partial

    user_client.post(f"/training/generations/{mine.pk}/cancel/", {"from": "queue"}, **HTMX)
    mine.refresh_from_db()
    assert mine.status == JobStatus.CANCELLED
    assert "every 2s" not in user_client.get("/training/generations/queue/", **HTMX).content.decode()


def test_other_users_generations_are_404(user_client, other_user, base_model, redis_conn):
    theirs = generation_create(user=other_user, prompt="theirs", **FAST)
    for url in (f"/training/generations/{theirs.pk}/", f"{URL}?job={theirs.pk}"):
        assert user_client.get(url).status_code == 404
    for url in (f"/training/generations/{theirs.pk}/cancel/", f"/training/generations/{theirs.pk}/regenerate/"):
        assert user_client.post(url).status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == JobStatus.QUEUED and GenerationJob.objects.count() == 1


def test_the_job_page_polls_while_active_and_cancel_stops_it(user_client, user, base_model, redis_conn):
    job = generation_create(user=user, prompt="mine", **FAST)
    page = user_client.get(f"/training/generations/{job.pk}/").content.decode()
    assert 'hx-trigger="every 2s"' in page and "<progress" in page and "Cancel" in page

    partial = user_client.post(f"/training/generations/{job.pk}/cancel/", **HTMX).content.decode()
    assert "Cancelled" in partial and "every 2s" not in partial


def test_the_messages_of_htmx_requests_show_in_the_page_once(user_client, user, base_model, redis_conn):
    # On the job page: the cancel's own message comes with its fragment, and is not left for a later page.
    job = generation_create(user=user, prompt="mine", **FAST)
    partial = user_client.post(f"/training/generations/{job.pk}/cancel/", **HTMX).content.decode()
    assert 'hx-swap-oob="innerHTML"' in partial and "Cancelling: it stops before its next denoising step." in partial
    assert "Cancelling" not in user_client.get(URL).content.decode()
    # On the generate page: "Queued generation …" goes once its queue has nothing left running.
    queued = generation_create(user=user, prompt="again", **FAST)
    assert 'id="messages" hx-swap-oob' not in user_client.get("/training/generations/queue/", **HTMX).content.decode()
    user_client.post(f"/training/generations/{queued.pk}/cancel/", {"from": "queue"}, **HTMX)
    final = user_client.get("/training/generations/queue/", **HTMX).content.decode()
    assert "every 2s" not in final and '<div id="messages" hx-swap-oob="innerHTML"></div>' in final


@pytest.fixture
def generated(transactional_db, user, base_model):
    """Two generated images made inline (no worker; run_job manages connections, so the database is real)."""
    job = generation_create(user=user, prompt="a red square", negative_prompt="blur", seed=321, count=2,
                            enqueue=False, **FAST)
    run_generation_inline(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    return job, selectors.job_images(job)


def test_a_generated_image_page_shows_how_it_was_made_with_use_and_regenerate_links(user_client, generated):
    job, images = generated
    html = user_client.get(images[1].get_absolute_url()).content.decode()

    for text in (f"Generation {job.pk}", "tiny (Stable Diffusion 1.5)", "a red square", "blur", "322", "Euler",
                 "32×32", "Use these settings", "Regenerate"):
        assert text in html, text
    assert f'href="{job.get_absolute_url()}"' in html
    assert f"/training/generate/?image={images[1].pk}" in html
    assert f"/training/generations/images/{images[1].pk}/regenerate/" in html


def test_use_these_settings_prefills_the_form_with_the_images_own_seed(user_client, generated):
    _, images = generated
    html = user_client.get(f"{URL}?image={images[1].pk}").content.decode()

    assert re.search(r'name="seed"[^>]*value="322"', html)
    assert re.search(r'name="count"[^>]*value="1"', html)
    assert "a red square</textarea>" in html and "blur</textarea>" in html


def test_regenerate_asks_first_then_queues_the_same_settings_and_seed(user_client, generated, redis_conn):
    job, images = generated
    url = f"/training/generations/images/{images[0].pk}/regenerate/"
    assert "Regenerate this image" in user_client.get(url).content.decode()
    assert GenerationJob.objects.count() == 1

    response = user_client.post(url)
    again = GenerationJob.objects.exclude(pk=job.pk).get()
    assert response.status_code == 302 and response["Location"] == again.get_absolute_url()
    assert (again.seed, again.count, again.prompt, again.negative_prompt) == (321, 2, job.prompt, job.negative_prompt)


def test_others_may_regenerate_a_public_generated_image_but_not_a_private_one(other_client, generated, redis_conn):
    _, images = generated
    url = f"/training/generations/images/{images[0].pk}/regenerate/"
    assert other_client.get(url).status_code == 404 and other_client.get(f"{URL}?image={images[0].pk}").status_code \
        == 404
    images[0].is_public = True
    images[0].save()

    assert other_client.post(url).status_code == 302
    assert GenerationJob.objects.filter(owner__username="bob").count() == 1


def test_use_these_settings_reads_a1111_parameters_from_an_uploaded_png(user_client, user, registry_loras):
    from PIL import Image

    text = a1111_parameters("a castle at dusk", "fog", 30, "DPM++ 2M Karras", 6.5, 777, 512, 768,
                            model_name="tiny", loras=[("style", 0.8), ("unknown-lora", 1.0)])
    image = image_ingest(owner=user, data=png_bytes_with_parameters(Image.new("RGB", (16, 16), "red"), text),
                         filename="a1111.png").image
    html = user_client.get(f"{URL}?image={image.pk}").content.decode()

    assert "a castle at dusk</textarea>" in html and re.search(r'name="seed"[^>]*value="777"', html)
    assert '<option value="dpmpp_2m_karras" selected>' in html
    assert re.search(rf'name="lora" value="{registry_loras["style"].pk}" checked', html)
    assert "unknown-lora" in html and "left out" in html


def test_the_list_page_shows_my_generations_only(user_client, user, other_user, base_model, redis_conn):
    generation_create(user=user, prompt="mine here", **FAST)
    generation_create(user=other_user, prompt="not mine", **FAST)
    html = user_client.get("/training/generations/").content.decode()
    assert "mine here" in html and "not mine" not in html


def test_pages_need_a_login(client, db):
    for url in (URL, "/training/generations/", "/training/generations/queue/"):
        assert client.get(url).status_code == 302


def test_a_lora_can_be_preselected_from_its_page_but_not_another_users_private_one(user_client, registry_loras):
    early, secret = registry_loras["early"], registry_loras["secret"]
    html = user_client.get(f"{URL}?lora={early.pk}").content.decode()

    assert re.search(rf'name="lora" value="{early.pk}" checked', html)
    assert user_client.get(f"{URL}?lora={secret.pk}").status_code == 404
