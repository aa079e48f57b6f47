"""Base class for maintenance commands: each run is recorded as a MaintenanceRun row."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from .models import MaintenanceOutcome, MaintenanceRun

_NOT_RECORDED = {"verbosity", "settings", "pythonpath", "traceback", "no_color", "force_color", "skip_checks"}


class MaintenanceCommand(BaseCommand):
    """Subclasses implement `run(**options) -> dict of counts` instead of `handle`.

    The row is written before the work starts (so a crash still leaves a trace)
    and finished with the counts and outcome. A CommandError is recorded as failed
    and re-raised so the exit status is non-zero.
    """

    maintenance_name: str | None = None

    def run(self, **options: Any) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def handle(self, *args: Any, **options: Any) -> None:
        name = self.maintenance_name or self.__module__.rsplit(".", 1)[-1]
        arguments = {k: _jsonable(v) for k, v in options.items() if k not in _NOT_RECORDED}
        if args:
            arguments["args"] = [_jsonable(a) for a in args]
        record = MaintenanceRun.objects.create(name=name, arguments=arguments)
        self.maintenance_run = record
        try:
            counts = self.run(*args, **options) or {}
        except BaseException as exc:
            record.outcome = MaintenanceOutcome.FAILED
            record.message = str(exc) or type(exc).__name__
            record.finished_at = timezone.now()
            record.save(update_fields=["outcome", "message", "finished_at"])
            if isinstance(exc, (CommandError, KeyboardInterrupt, SystemExit)):
                raise
            raise CommandError(f"{name} failed: {type(exc).__name__}: {exc}") from exc
        record.counts = {k: _jsonable(v) for k, v in counts.items()}
        record.outcome = MaintenanceOutcome.SUCCEEDED
        record.finished_at = timezone.now()
        record.save(update_fields=["counts", "outcome", "finished_at"])


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is sys.stdout or value is sys.stderr:
        return None
    return str(value)
