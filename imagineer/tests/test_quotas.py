"""imagineer.quotas: defaults and per-user overrides, the admin where staff set them, and the cost ceilings.

The limits as each service applies them are tested with the service (training, generation, labeling, scraping).
"""

from __future__ import annotations

import pytest
from django.db import transaction

from imagineer import quotas
from imagineer.models import UserLimits


def test_the_limit_is_the_setting_unless_the_user_has_an_override(user, other_user, staff_user, settings):
    settings.MAX_ACTIVE_TRAINING_PER_USER = 2
    settings.GENERATE_MAX_QUEUED_PER_USER = 7
    UserLimits.objects.create(user=user, max_active_training=5, max_active_scraping=0)

    assert quotas.limit_for(user, "training") == 5
    assert quotas.limit_for(user, "scraping") == 0
    assert quotas.limit_for(user, "generation") == 7, "an empty override means the default"
    assert quotas.limit_for(other_user, "training") == 2
    assert quotas.limit_for(staff_user, "training") == 2, "staff have the same defaults"


@pytest.mark.django_db(transaction=True)
def test_the_check_must_run_inside_the_transaction_that_creates_the_job(user):
    from imagineer.tests.jobsapp.models import EchoJob

    with pytest.raises(RuntimeError, match="inside the transaction"):
        quotas.quota_check(user=user, model=EchoJob)
    with transaction.atomic(), pytest.raises(ValueError, match="no quota kind"):
        quotas.quota_check(user=user, model=EchoJob)


def test_the_settings_page_shows_each_limit_and_how_many_are_active(user_client, user, settings):
    settings.MAX_ACTIVE_SCRAPES_PER_USER = 3
    UserLimits.objects.create(user=user, max_active_training=4)
    html = user_client.get("/settings/").content.decode()

    assert "Job limits" in html
    assert "<td>Training runs</td><td>0</td>" in html and "4 <span class=\"badge\">set for you</span>" in html
    assert "<td>Scrapes</td><td>0</td>\n        <td>3</td>" in html


def test_the_user_page_in_the_admin_has_the_limits_inline(staff_client, user):
    html = staff_client.get(f"/admin/auth/user/{user.pk}/change/").content.decode()
    assert "Job limits" in html and 'name="job_limits-0-max_active_training"' in html
    assert "The site default is" in html


def _user_form(staff_client, user, **inline) -> dict:
    page = staff_client.get(f"/admin/auth/user/{user.pk}/change/")
    form = page.context["adminform"].form
    data = {name: value for name, value in form.initial.items()
            if value is not None and name not in ("password", "groups", "user_permissions", "last_login",
                                                  "date_joined")}
    data.update({
        "username": user.username, "email": user.email, "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00",
        "is_active": "on", "job_limits-TOTAL_FORMS": "1", "job_limits-INITIAL_FORMS": "0",
        "job_limits-MIN_NUM_FORMS": "0", "job_limits-MAX_NUM_FORMS": "1",
        **{f"job_limits-0-{name}": value for name, value in inline.items()},
    })
    return data


def test_staff_set_an_override_on_the_user_page(staff_client, user, settings):
    settings.MAX_ACTIVE_LABELING_PER_USER = 4
    untouched = staff_client.post(f"/admin/auth/user/{user.pk}/change/", _user_form(staff_client, user))
    assert untouched.status_code == 302 and not UserLimits.objects.exists(), "an empty inline saves nothing"

    response = staff_client.post(f"/admin/auth/user/{user.pk}/change/",
                                 _user_form(staff_client, user, max_active_labeling="9", note="big album"))
    assert response.status_code == 302
    assert quotas.limit_for(user, "labeling") == 9
    assert quotas.limit_for(user, "training") == quotas.default_limit("training")


def test_the_admin_is_staff_only(user_client):
    assert user_client.get("/admin/imagineer/userlimits/").status_code == 302


@pytest.mark.parametrize(("request_", "allowed"), [
    ({"width": 1024, "height": 1024, "count": 4, "steps": 50}, True),  # a usual SDXL batch
    ({"width": 512, "height": 512, "count": 8, "steps": 150}, True),
    ({"width": 2048, "height": 2048, "count": 1, "steps": 50}, True),
    ({"width": 2048, "height": 2048, "count": 8, "steps": 150}, False),  # the example: 9 GB, minutes a step
    ({"width": 2048, "height": 1024, "count": 4, "steps": 1}, False),
    ({"width": 1024, "height": 1024, "count": 4, "steps": 100}, False),
])
def test_the_generation_ceiling(request_, allowed):
    if allowed:
        quotas.generation_cost_check(**request_)
    else:
        with pytest.raises(quotas.CostTooHigh):
            quotas.generation_cost_check(**request_)


def test_the_training_ceiling():
    quotas.training_cost_check(steps=3000, batch_size=2, resolution=1024)  # the "strong" preset on SDXL
    quotas.training_cost_check(steps=100_000, batch_size=1, resolution=512)
    with pytest.raises(quotas.CostTooHigh, match="megapixels per step") as per_step:
        quotas.training_cost_check(steps=100_000, batch_size=64, resolution=2048)  # the example
    assert per_step.value.field == "batch_size"
    with pytest.raises(quotas.CostTooHigh, match="million pixels to train on") as total:
        quotas.training_cost_check(steps=50_000, batch_size=4, resolution=1024)
    assert total.value.field == "steps"
