"""The new-run page in a real browser (static/js/training.js): choosing another base model refills the
defaults that follow the model (size, preset, precision, gradient checkpointing) but never a value the user set."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("media_root")]


def test_choosing_a_model_refills_its_family_defaults_but_keeps_what_the_user_chose(
        live_server, page, user, client, make_run_album):
    from training.models import BaseModel

    BaseModel.objects.create(name="tiny", source="base/tiny", kind="sd15", native_resolution=64, is_default=True)
    BaseModel.objects.create(name="xl", source="base/xl", kind="sdxl")
    make_run_album(user, "Shapes")
    client.force_login(user)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value,
                               "url": live_server.url}])
    page.goto(f"{live_server.url}/training/runs/new/")

    def values():
        return (page.input_value("#id_resolution"), page.input_value("#id_mixed_precision"),
                page.is_checked("#id_gradient_checkpointing"))

    assert values() == ("64", "no", False)
    page.select_option("#id_base_model", "xl")
    assert values() == ("1024", "bf16", True)
    page.select_option("#id_base_model", "tiny")
    assert values() == ("64", "no", False)

    # What the user sets by hand stays when the model changes again.
    page.click("summary:text('Advanced')")
    page.select_option("#id_mixed_precision", "fp16")
    page.select_option("#id_base_model", "xl")
    assert values() == ("1024", "fp16", True)
    assert page.errors == []
