"""The one progress block every job page includes (django-template-partials)."""

from types import SimpleNamespace

from django.template.loader import render_to_string


def _job(**extra):
    values = dict(status="running", get_status_display="Running", message="halfway", progress_percent=42,
                  is_active=True)
    values.update(extra)
    return SimpleNamespace(**values)


def test_the_shared_partial_shows_status_stage_queue_and_progress():
    html = render_to_string("_job_progress.html#progress",
                            {"job": _job(), "stage": "Crawling", "queue_position": 3})
    assert 'class="badge running">Running<' in html and "halfway" in html
    assert 'badge stage">Crawling<' in html and "position 3 in the queue" in html
    assert '<progress max="100" value="42"' in html


def test_a_finished_job_shows_no_stage():
    html = render_to_string("_job_progress.html#progress", {"job": _job(is_active=False, status="succeeded"),
                                                            "stage": "Crawling"})
    assert "Crawling" not in html and "queue" not in html


def test_every_job_status_fragment_uses_it():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for name in ("scraping/templates/scraping/_job_status.html", "labeling/templates/labeling/_job_status.html",
                 "training/templates/training/generation/_status.html",
                 "training/templates/training/runs/_run_status.html"):
        text = (root / name).read_text()
        assert '"_job_progress.html#progress"' in text and "<progress" not in text, name
