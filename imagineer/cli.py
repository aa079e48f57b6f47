"""Shared pieces for management commands that start jobs: --wait / --inline and a progress bar."""

from __future__ import annotations

import sys
import time

from django.core.management.base import CommandError
from tqdm import tqdm

from .models import Job, JobStatus


def add_run_mode_arguments(parser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--wait", action="store_true",
                      help="Queue the job and show a progress bar until it ends.")
    mode.add_argument("--inline", action="store_true",
                      help="Run the job in this process (no worker needed).")
    parser.add_argument("--no-progress", action="store_true", help="No progress bar with --wait.")


def wait_for_job(job: Job, *, show_progress: bool = True, poll: float = 0.5, timeout: float | None = None) -> Job:
    """Poll the row until the job ends, drawing a progress bar; Ctrl-C asks the job to cancel."""
    from .jobs import job_cancel

    bar = tqdm(total=100, unit="%", file=sys.stderr, disable=not show_progress, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n:.0f}% {postfix}")
    started = time.monotonic()
    try:
        while True:
            job.refresh_from_db()
            bar.n = job.progress_percent
            bar.set_postfix_str(job.message[:60], refresh=False)
            bar.refresh()
            if job.is_finished:
                return job
            if timeout is not None and time.monotonic() - started > timeout:
                raise CommandError(f"Gave up waiting after {timeout:.0f}s; the job goes on (id {job.pk}).")
            time.sleep(poll)
    except KeyboardInterrupt:
        job_cancel(job)
        raise CommandError(f"Interrupted: asked job {job.pk} to cancel.") from None
    finally:
        bar.close()


def finish(command, job: Job) -> None:
    """Print how the job ended; a failed or cancelled job makes the command exit non-zero."""
    job.refresh_from_db()
    if job.status == JobStatus.SUCCEEDED:
        command.stdout.write(command.style.SUCCESS(job.message or "Done."))
        return
    if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
        command.stdout.write(f"Job {job.pk} is {job.status}: {job.message}")
        return
    raise CommandError(f"Job {job.pk} {job.status}: {job.error or job.message}")


def resolve_owner(username: str | None):
    """The user a command acts for: the named one, else the only active user, else the only superuser."""
    from django.contrib.auth import get_user_model

    users = get_user_model().objects
    if username:
        owner = users.filter(username=username).first()
        if owner is None:
            raise CommandError(f"No user named {username!r}.")
        return owner
    for candidates in (users.filter(is_active=True), users.filter(is_active=True, is_superuser=True)):
        found = list(candidates[:2])
        if len(found) == 1:
            return found[0]
    raise CommandError("Name the owner with --owner USERNAME.")
