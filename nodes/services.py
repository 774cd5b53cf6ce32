"""The fleet's write operations, one function each, called by every face.

REST views, dashboard views, Django admin actions and management commands all restart a
worker, drain it, cordon or drain a node and scale a deployment through these functions, so
the rules are written once and each change leaves the same audit event (``audit.Action``),
whichever face made it (``via``). Each runs in one transaction: the change and its audit
event are written together or not at all.

What is written here is *desired* state. Workers' actual state belongs to the node agents
and the scheduler, and changes only through ``nodes.states.transition`` (with a
``WorkerEvent``); nothing here writes ``Worker.state``, ``port`` or ``pid``.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import F

from controlplane import audit
from controlplane.audit import Action, Origin
from nodes.models import Deployment, DesiredState, Node, NodeState, Worker, WorkerState


class Refused(Exception):
    """The operation does not apply to the object as it is now; the message says why."""


def _who(origin: Origin) -> str:
    """The requester in a worker's or node's state reason: "alice via dashboard"."""
    actor = origin.actor if getattr(origin.actor, "is_authenticated", False) else "system"
    return f"{actor} via {origin.via}"


# --- workers ---------------------------------------------------------------------------------


def restart_worker(
    worker: Worker,
    *,
    origin: Origin = audit.SYSTEM,
) -> Worker:
    """Ask the node agent to replace the worker's engine with a fresh one.

    Raises the worker's ``generation``, which is part of its assignment's fingerprint: the
    agent sees a stale engine, stops it and reports ``failed``, then starts a new one
    (``starting``, ``ready``), each move through the state machine with its event. A
    crash-looping or failed worker is started at once, without waiting out its backoff.
    """
    with transaction.atomic():
        locked = Worker.objects.select_for_update().get(pk=worker.pk)
        if not locked.can_restart:
            raise Refused(
                f"Worker {locked} is {locked.state} and no longer wanted; it cannot be "
                "restarted (its deployment places a new worker if it needs one)."
            )
        Worker.objects.filter(pk=locked.pk).update(
            generation=F("generation") + 1,
            state_reason=f"restart requested by {_who(origin)}"[:1000],
        )
        locked.refresh_from_db(fields=["generation", "state_reason", "updated_at"])
        origin.record(
            Action.RESTART, locked, {"generation": [locked.generation - 1, locked.generation]}
        )
    return locked


def drain_worker(
    worker: Worker,
    *,
    origin: Origin = audit.SYSTEM,
) -> Worker:
    """Say the worker is no longer wanted: its agent drains and stops it, and the scheduler
    places a replacement if the deployment still wants as many replicas."""
    with transaction.atomic():
        locked = Worker.objects.select_for_update().get(pk=worker.pk)
        if locked.state == WorkerState.STOPPED:
            raise Refused(f"Worker {locked} is already stopped.")
        before = locked.desired_state
        if before != DesiredState.STOPPED:
            Worker.objects.filter(pk=locked.pk).update(
                desired_state=DesiredState.STOPPED,
                state_reason=f"drain requested by {_who(origin)}"[:1000],
            )
            locked.refresh_from_db(fields=["desired_state", "state_reason", "updated_at"])
        origin.record(Action.DRAIN, locked, {"desired_state": [before, locked.desired_state]})
    return locked


# --- nodes -----------------------------------------------------------------------------------

NODE_ACTIONS: dict[NodeState, Action] = {
    NodeState.CORDONED: Action.CORDON,
    NodeState.DRAINING: Action.DRAIN,
    NodeState.READY: Action.UNCORDON,
}


def set_node_state(
    node: Node,
    state: NodeState | str,
    reason: str = "",
    *,
    origin: Origin = audit.SYSTEM,
) -> Node:
    """Cordon (no new workers), drain (its workers move elsewhere) or uncordon a node.

    A lost node is the heartbeat monitor's to bring back (its agent must be heard again), so
    people may not set it to ready, nor set any node to lost.
    """
    wanted = NodeState(state)
    if wanted not in NODE_ACTIONS:
        raise Refused(
            f"A node cannot be set to {wanted} by hand: it is lost when its agent stops "
            "heartbeating, and ready again when the agent is heard from."
        )
    with transaction.atomic():
        locked = Node.objects.select_for_update().get(pk=node.pk)
        before = locked.state
        if before == NodeState.LOST and wanted == NodeState.READY:
            raise Refused(
                f"Node {locked.name} is lost; it becomes ready when its agent is heard again."
            )
        locked.state, locked.state_reason = wanted, reason[:500]
        # save(), not update(): the scheduler reacts to a node's post_save.
        locked.save(update_fields=["state", "state_reason", "updated_at"])
        changes: dict[str, Any] = {"state": [before, wanted.value]}
        if reason:
            changes["state_reason"] = reason
        origin.record(NODE_ACTIONS[wanted], locked, changes)
    return locked


def cordon_node(node: Node, reason: str = "", *, origin: Origin = audit.SYSTEM) -> Node:
    return set_node_state(node, NodeState.CORDONED, reason or "cordoned", origin=origin)


def drain_node(node: Node, reason: str = "", *, origin: Origin = audit.SYSTEM) -> Node:
    return set_node_state(node, NodeState.DRAINING, reason or "draining", origin=origin)


def uncordon_node(node: Node, reason: str = "", *, origin: Origin = audit.SYSTEM) -> Node:
    return set_node_state(node, NodeState.READY, reason, origin=origin)


# --- deployments -----------------------------------------------------------------------------

SCALE_FIELDS = ("replicas", "traffic_weight", "desired_state")


def scale_deployment(
    deployment: Deployment,
    *,
    replicas: int | None = None,
    traffic_weight: int | None = None,
    desired_state: str | None = None,
    origin: Origin = audit.SYSTEM,
) -> Deployment:
    """Change how many replicas run, their share of the model's traffic, or whether they run
    at all; the scheduler and the agents move toward it. Values are checked by the model's
    own validators (a ValidationError names the field)."""
    wanted: dict[str, object] = {
        "replicas": replicas,
        "traffic_weight": traffic_weight,
        "desired_state": desired_state,
    }
    with transaction.atomic():
        locked = Deployment.objects.select_for_update().get(pk=deployment.pk)
        changes: dict[str, Any] = {}
        for name, value in wanted.items():
            if value is not None and getattr(locked, name) != value:
                changes[name] = [getattr(locked, name), value]
                setattr(locked, name, value)
        if not changes:
            return locked
        locked.full_clean(
            exclude=[f.name for f in Deployment._meta.fields if f.name not in changes]
        )
        # save(): its post_save asks the scheduler to place or drain replicas.
        locked.save(update_fields=[*changes, "updated_at"])
        origin.record(Action.SCALE, locked, changes)
    return locked
