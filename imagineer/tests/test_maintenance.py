import pytest
from django.core.management import call_command

from imagineer.models import MaintenanceOutcome, MaintenanceRun


@pytest.mark.django_db
def test_a_maintenance_command_is_recorded_with_counts(redis_conn, capsys):
    call_command("reap_jobs")
    run = MaintenanceRun.objects.get(name="reap_jobs")
    assert run.outcome == MaintenanceOutcome.SUCCEEDED
    assert run.finished_at is not None
    assert run.counts == {"failed": 0, "requeued": 0, "force_cancelled": 0, "lost": 0}
    assert "reaped: 0 failed" in capsys.readouterr().out


@pytest.mark.django_db
def test_a_failing_maintenance_command_is_recorded_as_failed(monkeypatch):
    from django.core.management.base import CommandError

    import imagineer.management.commands.reap_jobs as reap

    def boom():
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(reap, "reap_stale_jobs", boom)
    with pytest.raises(CommandError, match="disk on fire"):
        call_command("reap_jobs")
    run = MaintenanceRun.objects.get(name="reap_jobs")
    assert run.outcome == MaintenanceOutcome.FAILED
    assert "disk on fire" in run.message


@pytest.mark.django_db
def test_maintenance_runs_are_listed_in_the_admin(staff_client):
    MaintenanceRun.objects.create(name="purge_trash", outcome=MaintenanceOutcome.SUCCEEDED, counts={"deleted": 3})
    page = staff_client.get("/admin/imagineer/maintenancerun/")
    assert page.status_code == 200
    assert b"purge_trash" in page.content
