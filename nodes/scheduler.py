"""Placement of deployments' replicas onto nodes' devices: filters, then scorers.

The core (``place``) works on plain snapshots (``NodeView``/``DeviceView``/``Replica``) so it can be
tested and benchmarked without a database; ``schedule()`` loads the snapshot from the database,
places what is missing, drains what is extra and writes the result in one transaction.

Filters say, in words, why a node cannot take a replica; when no node passes, the deployment's
``unschedulable_reason`` lists those words per node. Scorers rank the nodes that pass:

- bin-pack (default): prefer the fullest node that still fits, so whole nodes stay free for
  large tensor-parallel replicas;
- spread (on request): prefer the emptiest node;
- anti-affinity: replicas of one deployment go to different nodes where possible (a penalty
  large enough to beat either strategy, but a soft rule: a lone node still takes them all).

Devices: a GPU runs one worker at a time (exclusive). A CPU node registers one pseudo-device
(kind "cpu") with the host's memory; several workers share it as long as their memory
estimates fit. All devices of one replica are on one node (tensor parallelism needs that).

Over 400 lines on purpose: the filters, the scorers and the placement loop that runs them are
one pipeline, read top to bottom; `place` stays pure (no database) whatever the length.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from nodes.agent import protocol

logger = logging.getLogger(__name__)

GIB = 1 << 30


def gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


# ---------------------------------------------------------------------------------------------
# Snapshot types


@dataclass
class DeviceView:
    id: int
    index: int
    kind: str
    total: int
    free: int
    busy: bool = False  # an exclusive device already running a worker
    exclusive: bool = field(init=False)  # a GPU: one worker at a time

    def __post_init__(self) -> None:
        self.exclusive = protocol.is_exclusive(self.kind)

    def fits(self, need: int) -> bool:
        return self.free >= need and not (self.busy and self.exclusive)

    def take(self, need: int) -> None:
        if self.exclusive:
            self.busy = True
            self.free = 0
        else:
            self.free -= need


@dataclass
class NodeView:
    id: int
    name: str
    state: str = "ready"
    labels: dict[str, Any] = field(default_factory=dict)
    heartbeat_fresh: bool = True
    devices: list[DeviceView] = field(default_factory=list)
    # deployment id -> replicas of it already on this node (for anti-affinity)
    replicas: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    # (usable device count, largest free, used memory, total memory), computed on first use
    # and dropped whenever a placement changes this node: placement visits every node for
    # every replica, so the common "this node is full" answer must be cheap.
    _summary: tuple[int, int, int, int] | None = field(default=None, repr=False, compare=False)

    def summary(self) -> tuple[int, int, int, int]:
        if self._summary is None:
            usable = [d for d in self.devices if not (d.exclusive and d.busy)]
            self._summary = (
                len(usable),
                max((d.free for d in usable), default=0),
                sum(d.total - d.free for d in self.devices),
                sum(d.total for d in self.devices) or 1,
            )
        return self._summary

    _signature: tuple[Any, ...] | None = field(default=None, repr=False, compare=False)

    def signature(self) -> tuple[Any, ...]:
        """Everything the filters and scorers look at, except per-deployment replica counts."""
        if self._signature is None:
            self._signature = (
                self.state,
                self.heartbeat_fresh,
                json.dumps(self.labels, sort_keys=True, default=str),
                tuple((d.kind, d.total, d.free, d.busy) for d in self.devices),
            )
        return self._signature

    def changed(self) -> None:
        self._summary = None
        self._signature = None

    @property
    def total_memory(self) -> int:
        return self.summary()[3]

    @property
    def used_memory(self) -> int:
        return self.summary()[2]

    def could_fit(self, replica: Replica) -> bool:
        """A necessary condition for the device and memory filters, in O(1)."""
        usable, largest, _used, _total = self.summary()
        return usable >= replica.devices and largest >= replica.memory_per_device


@dataclass(frozen=True)
class Replica:
    """What one replica of a deployment needs."""

    deployment_id: int
    devices: int
    memory_per_device: int
    label_selector: dict[str, Any] = field(default_factory=dict)
    strategy: str = "binpack"


@dataclass
class Placement:
    node: NodeView
    devices: list[DeviceView]


# ---------------------------------------------------------------------------------------------
# Filters: (node, replica) -> None when the node may take it, else the reason in words.

Filter = Callable[[NodeView, Replica], str | None]


def node_is_ready(node: NodeView, replica: Replica) -> str | None:
    if node.state == "lost":
        return "is lost (no heartbeat)"
    if node.state == "cordoned":
        return "is cordoned (takes no new workers)"
    if node.state == "draining":
        return "is draining"
    if node.state != "ready":
        return f"is {node.state}"
    if not node.heartbeat_fresh:
        return "has not sent a recent heartbeat"
    return None


def labels_match(node: NodeView, replica: Replica) -> str | None:
    missing = [
        f"{key}={value}"
        for key, value in sorted(replica.label_selector.items())
        if node.labels.get(key) != value
    ]
    if missing:
        return f"lacks label {', '.join(missing)}"
    return None


def enough_devices(node: NodeView, replica: Replica) -> str | None:
    if len(node.devices) < replica.devices:
        noun = "device" if len(node.devices) == 1 else "devices"
        return (
            f"has {len(node.devices)} {noun}; a replica needs {replica.devices} on one node "
            "(tensor-parallel replicas are not split across nodes)"
        )
    return None


def enough_memory(node: NodeView, replica: Replica) -> str | None:
    fitting = sum(1 for d in node.devices if d.fits(replica.memory_per_device))
    if fitting >= replica.devices:
        return None
    busy = sum(1 for d in node.devices if d.exclusive and d.busy)
    largest = max((d.free for d in node.devices if not (d.exclusive and d.busy)), default=0)
    words = (
        f"only {fitting} of {len(node.devices)} devices can take "
        f"{gib(replica.memory_per_device)} (needs {replica.devices})"
    )
    details = []
    if busy:
        details.append(f"{busy} in use by other workers")
    details.append(f"largest free {gib(largest)}")
    return f"{words}: {', '.join(details)}"


FILTERS: list[tuple[str, Filter]] = [
    ("node ready", node_is_ready),
    ("labels", labels_match),
    ("device count", enough_devices),
    ("memory", enough_memory),
]

# ---------------------------------------------------------------------------------------------
# Scorers: (node, replica, chosen devices) -> a score; higher wins. Weighted and summed.

Scorer = Callable[[NodeView, Replica, list[DeviceView]], float]


def _utilisation_after(node: NodeView, replica: Replica, chosen: list[DeviceView]) -> float:
    taken = 0
    for d in chosen:
        taken += d.free if d.exclusive else replica.memory_per_device
    return (node.used_memory + taken) / node.total_memory


def binpack_score(node: NodeView, replica: Replica, chosen: list[DeviceView]) -> float:
    return _utilisation_after(node, replica, chosen) if replica.strategy == "binpack" else 0.0


def spread_score(node: NodeView, replica: Replica, chosen: list[DeviceView]) -> float:
    return 1.0 - _utilisation_after(node, replica, chosen) if replica.strategy == "spread" else 0.0


def anti_affinity_score(node: NodeView, replica: Replica, chosen: list[DeviceView]) -> float:
    return -float(node.replicas.get(replica.deployment_id, 0))


# Anti-affinity outweighs the strategy (whose scores lie in [0, 1]).
SCORERS: list[tuple[str, Scorer, float]] = [
    ("bin-pack", binpack_score, 1.0),
    ("spread", spread_score, 1.0),
    ("anti-affinity", anti_affinity_score, 10.0),
]


def choose_devices(node: NodeView, replica: Replica) -> list[DeviceView]:
    fitting = [d for d in node.devices if d.fits(replica.memory_per_device)]
    if replica.strategy == "spread":
        fitting.sort(key=lambda d: (-d.free, d.index))
    else:
        # Best fit: the tightest device that still fits leaves the roomy ones for big replicas.
        fitting.sort(key=lambda d: (d.free, d.index))
    return fitting[: replica.devices]


def refusals(nodes: Iterable[NodeView], replica: Replica) -> dict[str, str]:
    """For each node, the first filter's reason that refuses the replica (empty: it fits)."""
    out: dict[str, str] = {}
    for node in nodes:
        for _name, check in FILTERS:
            reason = check(node, replica)
            if reason:
                out[node.name] = reason
                break
    return out


def place(nodes: list[NodeView], replica: Replica) -> Placement | None:
    """The best node and devices for one replica, or None. Updates the snapshot on success."""
    best_score = 0.0
    best_placement: Placement | None = None
    seen: set[tuple[Any, ...]] = set()
    for node in sorted(nodes, key=lambda n: n.name):
        if not node.could_fit(replica):
            continue  # the device or memory filter would refuse it anyway
        # A node identical to one seen earlier (in name order) gets the same filter answers
        # and score, and would lose the tie to it: skip it. Big fleets are mostly identical
        # empty or full nodes, so this keeps placement fast.
        key = (node.signature(), node.replicas.get(replica.deployment_id, 0))
        if key in seen:
            continue
        seen.add(key)
        if any(check(node, replica) for _name, check in FILTERS):
            continue
        chosen = choose_devices(node, replica)
        score = sum(weight * scorer(node, replica, chosen) for _n, scorer, weight in SCORERS)
        # Ties go to the node whose name sorts first, so placement is deterministic.
        if (
            best_placement is None
            or score > best_score
            or (score == best_score and node.name < best_placement.node.name)
        ):
            best_score = score
            best_placement = Placement(node=node, devices=chosen)
    if best_placement is not None:
        for device in best_placement.devices:
            device.take(replica.memory_per_device)
        best_placement.node.changed()
        best_placement.node.replicas[replica.deployment_id] += 1
    return best_placement


def describe_refusals(reasons: dict[str, str], limit: int = 5) -> str:
    """ "node-a: is lost; node-b, node-c: lacks label zone=a" — identical reasons grouped."""
    if not reasons:
        return "no nodes are registered"
    by_reason: dict[str, list[str]] = defaultdict(list)
    for node_name, reason in reasons.items():
        by_reason[reason].append(node_name)
    parts = []
    for reason, names in sorted(by_reason.items(), key=lambda item: (-len(item[1]), item[0])):
        shown = ", ".join(names[:limit])
        if len(names) > limit:
            shown += f" and {len(names) - limit} more"
        parts.append(f"{shown}: {reason}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Memory estimate


def weights_bytes(version: Any) -> int:
    if version.weights_size_bytes:
        return int(version.weights_size_bytes)
    path = Path(version.weights_source)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return 0


def memory_per_device(version: Any, devices: int) -> int:
    """Weights and KV cache split over the replica's devices, plus per-device overhead."""
    overhead = int(settings.SCHEDULER_MEMORY_OVERHEAD_BYTES)
    shared = weights_bytes(version) + int(version.kv_cache_bytes)
    return math.ceil(shared / max(devices, 1)) + overhead


# ---------------------------------------------------------------------------------------------
# The database side


@dataclass
class ScheduleReport:
    created: list[int] = field(default_factory=list)
    drained: list[int] = field(default_factory=list)
    stopped: list[int] = field(default_factory=list)
    unschedulable: dict[str, str] = field(default_factory=dict)


def _lock_scheduler() -> None:
    """One scheduler at a time: two runs placing onto the same GPU would double-book it."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [0x5C4ED])
    # SQLite: the IMMEDIATE transaction already serialises writers.


def schedule() -> ScheduleReport:
    """Move workers toward every deployment's desired replicas. Idempotent."""
    from nodes import states
    from nodes.models import (
        ACTIVE_WORKER_STATES,
        Deployment,
        DesiredState,
        Gpu,
        Node,
        NodeState,
        Worker,
        WorkerState,
    )

    report = ScheduleReport()
    with transaction.atomic():
        _lock_scheduler()

        # Workers on lost nodes: no agent will report them, so stop them here; replacements
        # are placed below. Workers on draining nodes are asked to stop by their agent.
        for worker in Worker.objects.filter(
            node__state=NodeState.LOST, state__in=ACTIVE_WORKER_STATES
        ).select_related("node"):
            assert worker.node is not None
            if states.force_stop(worker, f"node {worker.node.name} was lost; rescheduling"):
                report.stopped.append(worker.pk)
        for worker in Worker.objects.filter(node__isnull=True, state__in=ACTIVE_WORKER_STATES):
            if states.force_stop(worker, "its node was deleted; rescheduling"):
                report.stopped.append(worker.pk)
        Worker.objects.filter(
            node__state=NodeState.DRAINING, desired_state=DesiredState.RUNNING
        ).exclude(state=WorkerState.STOPPED).update(desired_state=DesiredState.STOPPED)

        fresh_after = timezone.now() - timedelta(seconds=settings.NODE_HEARTBEAT_TIMEOUT_SECONDS)
        nodes: dict[int, NodeView] = {}
        for node in Node.objects.all().order_by("name"):
            nodes[node.pk] = NodeView(
                id=node.pk,
                name=node.name,
                state=node.state,
                labels=dict(node.labels or {}),
                heartbeat_fresh=bool(
                    node.last_heartbeat_at and node.last_heartbeat_at >= fresh_after
                ),
            )
        devices: dict[int, DeviceView] = {}
        for gpu in Gpu.objects.all().order_by("node_id", "index"):
            view = DeviceView(
                id=gpu.pk,
                index=gpu.index,
                kind=gpu.kind,
                total=gpu.memory_total_bytes,
                # Exclusive GPUs: memory someone else uses is not ours to give.
                free=max(gpu.memory_total_bytes - gpu.memory_used_bytes, 0)
                if gpu.is_exclusive
                else gpu.memory_total_bytes,
            )
            devices[gpu.pk] = view
            nodes[gpu.node_id].devices.append(view)

        holding = (
            Worker.objects.filter(state__in=ACTIVE_WORKER_STATES)
            .select_related("deployment__model_version")
            .prefetch_related("gpus")
        )
        for worker in holding:
            gpus = list(worker.gpus.all())
            need = memory_per_device(worker.deployment.model_version, max(len(gpus), 1))
            for gpu in gpus:
                held = devices.get(gpu.pk)
                if held is None:
                    continue
                if held.exclusive:
                    held.busy, held.free = True, 0
                else:
                    held.free = max(held.free - need, 0)
            if worker.node_id in nodes and worker.desired_state == DesiredState.RUNNING:
                nodes[worker.node_id].replicas[worker.deployment_id] += 1

        node_list = list(nodes.values())
        for deployment in Deployment.objects.select_related("model_version").order_by(
            "created_at", "id"
        ):
            _reconcile_deployment(deployment, node_list, report)
    return report


def _reconcile_deployment(deployment: Any, nodes: list[NodeView], report: ScheduleReport) -> None:
    from nodes.models import Deployment, DesiredState, NodeState, Worker, WorkerState

    wanted = deployment.replicas if deployment.desired_state == DesiredState.RUNNING else 0
    live = list(
        Worker.objects.filter(deployment=deployment, desired_state=DesiredState.RUNNING)
        .exclude(state=WorkerState.STOPPED)
        .exclude(node__state__in=[NodeState.LOST, NodeState.DRAINING])
        .order_by("id")
    )
    reason = ""
    if len(live) > wanted:
        # Drop the least useful first: not-yet-ready ones, then the newest.
        rank: dict[str, int] = {WorkerState.READY: 1}
        extra = sorted(live, key=lambda w: (rank.get(w.state, 0), -w.pk))[: len(live) - wanted]
        ids = [w.pk for w in extra]
        Worker.objects.filter(pk__in=ids).update(desired_state=DesiredState.STOPPED)
        report.drained += ids
        for node in nodes:
            for w in extra:
                if w.node_id == node.id and node.replicas.get(deployment.pk, 0) > 0:
                    node.replicas[deployment.pk] -= 1
    elif len(live) < wanted:
        replica = Replica(
            deployment_id=deployment.pk,
            devices=deployment.gpus_per_replica,
            memory_per_device=memory_per_device(
                deployment.model_version, deployment.gpus_per_replica
            ),
            label_selector=dict(deployment.label_selector or {}),
            strategy=deployment.placement_strategy,
        )
        missing = wanted - len(live)
        for number in range(missing):
            placement = place(nodes, replica)
            if placement is None:
                placed = len(live) + number
                reason = (
                    f"{placed} of {wanted} replicas placed; replica {placed + 1} "
                    f"({replica.devices} x {gib(replica.memory_per_device)}) fits on no node: "
                    + describe_refusals(refusals(nodes, replica))
                )
                report.unschedulable[deployment.name] = reason
                logger.warning("deployment %s unschedulable: %s", deployment.name, reason)
                break
            worker = Worker.objects.create(
                deployment=deployment,
                node_id=placement.node.id,
                state=WorkerState.PENDING,
                state_reason=f"placed on {placement.node.name}",
            )
            worker.gpus.set([d.id for d in placement.devices])
            report.created.append(worker.pk)
            logger.info(
                "placed deployment %s worker %s on node %s devices %s",
                deployment.name,
                worker.pk,
                placement.node.name,
                [d.index for d in placement.devices],
            )
    if deployment.unschedulable_reason != reason:
        # .update(): saving the deployment would trigger another scheduling run.
        Deployment.objects.filter(pk=deployment.pk).update(unschedulable_reason=reason)
