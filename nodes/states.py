"""The worker state machine, in one place.

    pending ──► starting ──► ready ──► draining ──► stopped
                   │  ▲        │          ▲
                   ▼  │        ▼          │
                  failed ◄─────┘ ─────────┘
                   │  ▲
                   ▼  │
              crash_looping

- ``pending``: placed by the scheduler on a node and GPUs, not started yet.
- ``starting``: the agent launched the engine; waiting for /health and /v1/models.
- ``ready``: answering; the gateway routes to it.
- ``failed``: the engine exited, died or did not become ready in time; the agent will restart
  it after a backoff.
- ``crash_looping``: it failed repeatedly in a row; the agent still retries, at the capped
  backoff, until its deployment changes or it stays up.
- ``draining``: no longer wanted (scale down, delete, node drained); being stopped.
- ``stopped``: gone for good; a replacement is a new worker. A worker on a lost node goes
  straight to stopped from any state (the control plane cannot wait for an agent that is gone).

Every change goes through ``transition()``: a conditional UPDATE on the current state, so two
writers (an agent and the scheduler) can never both win, and an event row records why.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from controlplane.invalidation import publish
from nodes.models import Worker, WorkerEvent, WorkerState

S = WorkerState

ALLOWED: dict[str, frozenset[str]] = {
    S.PENDING: frozenset({S.STARTING, S.DRAINING, S.STOPPED}),
    S.STARTING: frozenset({S.READY, S.FAILED, S.CRASH_LOOPING, S.DRAINING, S.STOPPED}),
    S.READY: frozenset({S.FAILED, S.DRAINING, S.STOPPED}),
    S.FAILED: frozenset({S.STARTING, S.CRASH_LOOPING, S.DRAINING, S.STOPPED}),
    S.CRASH_LOOPING: frozenset({S.STARTING, S.DRAINING, S.STOPPED}),
    S.DRAINING: frozenset({S.STOPPED}),
    S.STOPPED: frozenset(),
}


class IllegalTransition(Exception):
    def __init__(self, worker_id: int, current: str, wanted: str) -> None:
        self.current = current
        self.wanted = wanted
        super().__init__(
            f"worker {worker_id} cannot go from {current} to {wanted}; "
            f"allowed from {current}: {', '.join(sorted(ALLOWED[current])) or 'none (terminal)'}"
        )


def can_transition(current: str, wanted: str) -> bool:
    return wanted in ALLOWED.get(current, frozenset())


def transition(
    worker: Worker | int,
    to_state: str,
    reason: str = "",
    *,
    source: str = "agent",
    exit_code: int | None = None,
    **fields: Any,
) -> bool:
    """Move a worker to ``to_state`` if the machine allows it from its current state.

    Returns True when it moved, False when it was already in ``to_state`` (repeating a report
    is harmless; ``fields`` are still written). Raises IllegalTransition otherwise, and
    Worker.DoesNotExist when the worker is gone.
    """
    worker_id = worker if isinstance(worker, int) else worker.pk
    now = timezone.now()
    updates: dict[str, Any] = dict(fields)
    updates["updated_at"] = now
    if reason:
        updates["state_reason"] = reason[:1000]
    if exit_code is not None:
        updates["last_exit_code"] = exit_code
    if to_state == S.STARTING:
        updates.setdefault("started_at", now)
        updates["ready_at"] = None
    elif to_state == S.READY:
        updates.setdefault("ready_at", now)
        updates["last_error"] = ""
    elif to_state == S.STOPPED:
        updates.setdefault("stopped_at", now)
        updates["pid"] = None
    elif to_state in (S.FAILED, S.CRASH_LOOPING) and reason:
        updates["last_error"] = reason

    with transaction.atomic():
        current = Worker.objects.filter(pk=worker_id).values_list("state", flat=True).first()
        if current is None:
            raise Worker.DoesNotExist(f"worker {worker_id} does not exist")
        if current == to_state:
            if fields:
                Worker.objects.filter(pk=worker_id, state=current).update(**fields, updated_at=now)
                publish("routes", worker_id)
            return False
        if not can_transition(current, to_state):
            raise IllegalTransition(worker_id, current, to_state)
        if current in (S.FAILED, S.CRASH_LOOPING) and to_state == S.STARTING:
            from django.db.models import F

            updates["restarts"] = F("restarts") + 1
        # Conditional on the state we read: if another writer moved it meanwhile, we lose
        # cleanly instead of overwriting their decision.
        moved = Worker.objects.filter(pk=worker_id, state=current).update(state=to_state, **updates)
        if not moved:
            fresh = Worker.objects.filter(pk=worker_id).values_list("state", flat=True).first()
            raise IllegalTransition(worker_id, fresh or "deleted", to_state)
        WorkerEvent.objects.create(
            worker_id=worker_id,
            from_state=current,
            to_state=to_state,
            reason=reason[:1000],
            exit_code=exit_code,
            source=source,
        )
    # .update() sends no post_save, so tell the gateways about routes ourselves.
    publish("routes", worker_id)
    return True


def force_stop(worker: Worker | int, reason: str, *, source: str = "scheduler") -> bool:
    """Stop a worker whatever its state (its node is lost: no agent will report)."""
    worker_id = worker if isinstance(worker, int) else worker.pk
    try:
        return transition(worker_id, S.STOPPED, reason, source=source)
    except (IllegalTransition, Worker.DoesNotExist):
        return False
