"""Fair dispatch for a queue many users share (generation, training): round robin over users, then oldest first.

RQ queues are first in, first out, so a fair queue only carries one anonymous "dispatch" task per queued row,
and the worker that runs a task starts the *fairest* queued row, not necessarily the row the task was created
for. Fairest means round robin over users: the user whose last job of this kind started longest ago (or who
never started one) goes first; ties go to the oldest queued row; a user's own rows run oldest first.
`fair_order()` simulates that rule over every queued row, which gives each row its queue position.

Works for any `imagineer.models.Job` subclass with an `owner`. The RQ entry point calls `claim_next()` with its
own task id and then runs the row it got (`imagineer.jobs.run_job` accepts a row claimed for its task).
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from typing import Any, TypeVar

from django.db import connection, transaction
from django.db.models import DateTimeField, F, Max, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from .models import Job, JobStatus

J = TypeVar("J", bound=Job)


def dispatchable(model: type[J]):
    """Queued rows a worker may start: not cancelled, and sent to the queue (inline runs have no RQ task)."""
    return model.objects.filter(status=JobStatus.QUEUED, cancel_requested=False).exclude(rq_job_id="")


def _owner_heads(model: type[J]) -> tuple[dict[int, deque], dict[int, tuple]]:
    rows = dispatchable(model).order_by("created_at", "pk").only("pk", "owner_id", "created_at", "rq_job_id")
    per_owner: dict[int, deque] = defaultdict(deque)
    for row in rows:
        per_owner[row.owner_id].append(row)
    if not per_owner:
        return {}, {}
    last_started = dict(
        model.objects.filter(owner_id__in=list(per_owner), started_at__isnull=False)
        .values("owner_id").annotate(last=Max("started_at")).values_list("owner_id", "last")
    )
    # Never started sorts before any real start time, which sorts before the turns handed out in a simulation.
    keys = {owner: (0, 0.0) if last_started.get(owner) is None else (1, last_started[owner].timestamp())
            for owner in per_owner}
    return per_owner, keys


def fair_order(model: type[J]) -> list[J]:
    """Every dispatchable row in the order the workers will start them (if nothing else is queued meanwhile)."""
    per_owner, keys = _owner_heads(model)
    heap: list[tuple[Any, ...]] = []
    for owner, rows in per_owner.items():
        head = rows[0]
        heap.append((keys[owner], head.created_at.timestamp(), head.pk, owner))
    heapq.heapify(heap)
    order: list[J] = []
    turn = 0
    while heap:
        _, _, _, owner = heapq.heappop(heap)
        rows = per_owner[owner]
        order.append(rows.popleft())
        if rows:
            turn += 1
            head = rows[0]
            heapq.heappush(heap, ((2, float(turn)), head.created_at.timestamp(), head.pk, owner))
    return order


def claim_candidates(model: type[J], limit: int = 20) -> list[J]:
    """The next row of each user, fairest first: what a worker tries to claim, in this order."""
    per_owner, keys = _owner_heads(model)
    heads = sorted(((keys[o], rows[0].created_at.timestamp(), rows[0].pk, rows[0]) for o, rows in per_owner.items()),
                   key=lambda item: item[:3])
    return [item[3] for item in heads[:limit]]


def queue_positions(model: type[J]) -> dict[int, int]:
    """{row id: position}, 1 being the next row a free worker starts."""
    return {job.pk: n for n, job in enumerate(fair_order(model), start=1)}


def queue_position(job: Job) -> int | None:
    if job.status != JobStatus.QUEUED or not job.rq_job_id or job.cancel_requested:
        return None
    return queue_positions(type(job)).get(job.pk)


def claim_next(model: type[J], *, task_id: str, message: str = "Starting…") -> J | None:
    """Atomically mark the fairest queued row running for the RQ task `task_id`, or return None if none waits.

    The row this task was queued for (if another worker has not started it) takes over the claimed row's
    task, so every queued row keeps pointing at a task that still waits in Redis: cancelling it removes a task,
    and the reaper can tell a row whose task Redis lost. One task starts at most one row, so there are never
    fewer waiting tasks than waiting rows. A row that ran before (a resumed training run) keeps its first
    start time.
    """
    skip_locked = connection.features.has_select_for_update_skip_locked
    for _ in range(10):
        with transaction.atomic():
            candidates = claim_candidates(model)
            if not candidates:
                return None
            for candidate in candidates:
                row = model.objects.filter(pk=candidate.pk, status=JobStatus.QUEUED, cancel_requested=False,
                                           rq_job_id=candidate.rq_job_id)
                if skip_locked and not list(row.select_for_update(skip_locked=True).values_list("pk", flat=True)):
                    continue  # another worker is claiming it right now
                now = timezone.now()
                first_start = Coalesce(F("started_at"), Value(now, output_field=DateTimeField()))
                claimed = row.update(status=JobStatus.RUNNING, started_at=first_start, heartbeat_at=now,
                                     rq_job_id=task_id, message=message)
                if not claimed:
                    continue
                if task_id and candidate.rq_job_id != task_id:
                    model.objects.filter(status=JobStatus.QUEUED, rq_job_id=task_id).update(
                        rq_job_id=candidate.rq_job_id
                    )
                candidate.refresh_from_db()
                return candidate
    return None


def current_task_id(model: type[Job], pk: int) -> str:
    """The id of the RQ task running now; outside a worker, the row's own task id (so the call acts as it)."""
    try:
        from rq import get_current_job

        current = get_current_job()
    except Exception:  # no RQ context at all
        current = None
    if current is not None:
        return current.id
    return model.objects.filter(pk=pk).values_list("rq_job_id", flat=True).first() or ""
