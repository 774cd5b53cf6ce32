from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from controlplane.validation import check_string_map, has_changed
from nodes.agent import protocol
from tenants.models import slug_validator


class NodeState(models.TextChoices):
    READY = "ready", "Ready"
    CORDONED = "cordoned", "Cordoned"  # keeps its workers, gets no new ones
    DRAINING = "draining", "Draining"  # its workers are moved elsewhere
    LOST = "lost", "Lost"  # stopped heartbeating


class Node(models.Model):
    name = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    address = models.CharField(
        max_length=255, help_text="Host or IP at which the gateway reaches this node's workers."
    )
    labels = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=NodeState.choices, default=NodeState.READY)
    state_reason = models.CharField(max_length=500, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    cpu_count = models.PositiveIntegerField(default=0)
    memory_bytes = models.PositiveBigIntegerField(default=0)
    agent_version = models.CharField(max_length=50, blank=True)
    # The agent authenticates with a credential shown once, stored as prefix + keyed hash.
    # NULL until a credential is issued; unique among those that have one.
    credential_prefix = models.CharField(max_length=32, unique=True, null=True, editable=False)  # noqa: DJ001
    credential_hash = models.CharField(max_length=64, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(state__in=NodeState.values), name="node_state_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class DeviceKind(models.TextChoices):
    # Values from the agent protocol, which discovery reports; see protocol.is_exclusive.
    GPU = protocol.GPU, "GPU"
    # A host without GPUs registers one pseudo-device standing for its CPUs and memory, so CPU
    # workers are placed by the same scheduler. Unlike a GPU it is shared: several workers fit
    # on it as long as their memory estimates do.
    CPU = protocol.CPU, "CPU (pseudo-device)"


class Gpu(models.Model):
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="gpus")
    index = models.PositiveSmallIntegerField()
    uuid = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=8, choices=DeviceKind.choices, default=DeviceKind.GPU)
    name = models.CharField(max_length=200)
    memory_total_bytes = models.PositiveBigIntegerField()
    memory_used_bytes = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["node__name", "index"]
        constraints = [
            models.UniqueConstraint(fields=["node", "index"], name="gpu_index_unique_per_node"),
        ]

    def __str__(self) -> str:
        return f"{self.node.name}/{self.kind}{self.index} ({self.name})"

    @property
    def is_exclusive(self) -> bool:
        return protocol.is_exclusive(self.kind)


class PlacementStrategy(models.TextChoices):
    BINPACK = "binpack", "Bin-pack (fill nodes before using new ones)"
    SPREAD = "spread", "Spread (prefer the emptiest nodes)"


class DesiredState(models.TextChoices):
    # The values are the agent protocol's (nodes/agent/protocol.py), named there once.
    RUNNING = protocol.RUNNING, "Running"
    STOPPED = protocol.STOPPED, "Stopped"


class Deployment(models.Model):
    """Desired state: run this model version as N replicas of G GPUs each.

    Rules: sizes within the validators' bounds, a label selector of strings, and a version that
    is not retired when it is deployed (a deployment of a version retired later can still be
    scaled down or stopped)."""

    model_version = models.ForeignKey(
        "models_registry.ModelVersion", on_delete=models.PROTECT, related_name="deployments"
    )
    name = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    replicas = models.PositiveIntegerField(default=1, validators=[MaxValueValidator(256)])
    gpus_per_replica = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(16)]
    )
    placement_strategy = models.CharField(
        max_length=16, choices=PlacementStrategy.choices, default=PlacementStrategy.BINPACK
    )
    label_selector = models.JSONField(
        default=dict, blank=True, help_text='Node labels a node must have, e.g. {"zone": "a"}.'
    )
    traffic_weight = models.PositiveIntegerField(
        default=100,
        validators=[MaxValueValidator(10000)],
        help_text="Share of the model's traffic, relative to its other deployments.",
    )
    desired_state = models.CharField(
        max_length=16, choices=DesiredState.choices, default=DesiredState.RUNNING
    )
    unschedulable_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(gpus_per_replica__gte=1), name="deployment_gpus_positive"
            ),
            models.CheckConstraint(
                condition=Q(desired_state__in=DesiredState.values),
                name="deployment_desired_state_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from models_registry.models import VersionState

        errors: dict[str, str] = {}
        check_string_map(errors, "label_selector", self.label_selector)
        if self.model_version_id is not None and has_changed(self, "model_version"):
            version = self.model_version
            if version.state == VersionState.RETIRED:
                errors["model_version"] = (
                    f"Version {version} is retired: deploy a draft or active version."
                )
        if errors:
            raise ValidationError(errors)


class WorkerState(models.TextChoices):
    # The values are the agent protocol's (nodes/agent/protocol.py), named there once, so the
    # agent (which never imports Django) and the database cannot disagree on a state's name.
    PENDING = protocol.PENDING, "Pending"
    STARTING = protocol.STARTING, "Starting"
    READY = protocol.READY, "Ready"
    DRAINING = protocol.DRAINING, "Draining"
    STOPPED = protocol.STOPPED, "Stopped"
    FAILED = protocol.FAILED, "Failed"
    CRASH_LOOPING = protocol.CRASH_LOOPING, "Crash-looping"


# States in which a worker holds its GPUs and port.
ACTIVE_WORKER_STATES = (
    WorkerState.PENDING,
    WorkerState.STARTING,
    WorkerState.READY,
    WorkerState.DRAINING,
    WorkerState.FAILED,
    WorkerState.CRASH_LOOPING,
)


class Worker(models.Model):
    """One engine process: desired by the scheduler, made real by the node agent."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="workers")
    node = models.ForeignKey(
        Node, on_delete=models.SET_NULL, null=True, blank=True, related_name="workers"
    )
    gpus = models.ManyToManyField(Gpu, blank=True, related_name="workers")
    desired_state = models.CharField(
        max_length=16, choices=DesiredState.choices, default=DesiredState.RUNNING
    )
    state = models.CharField(
        max_length=16, choices=WorkerState.choices, default=WorkerState.PENDING
    )
    state_reason = models.CharField(max_length=1000, blank=True)
    port = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    pid = models.PositiveIntegerField(null=True, blank=True)
    restarts = models.PositiveIntegerField(default=0)
    # Raised to ask for a restart (nodes.services.restart_worker). It is part of the
    # assignment's fingerprint, so the agent stops the running engine and starts a new one
    # through the state machine, exactly as after a configuration change.
    generation = models.PositiveIntegerField(default=0, editable=False)
    last_exit_code = models.IntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # The last lines of the engine's log, uploaded by the node agent (engine key redacted).
    log_tail = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["deployment__name", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(state__in=WorkerState.values), name="worker_state_valid"
            ),
            # Two live workers on one node never share a port.
            models.UniqueConstraint(
                fields=["node", "port"],
                condition=Q(port__isnull=False) & ~Q(state=WorkerState.STOPPED),
                name="worker_port_unique_per_node",
            ),
        ]
        indexes = [models.Index(fields=["state", "deployment"])]

    def __str__(self) -> str:
        return f"{self.deployment.name}#{self.pk}"

    @property
    def engine_api_key(self) -> str:
        """The key this worker's engine requires; derived, so it is stored nowhere."""
        from nodes.secrets import worker_api_key

        return worker_api_key(self.pk)

    @property
    def can_restart(self) -> bool:
        """A restart replaces a wanted worker's engine; one that is draining, stopped or asked
        to stop is on its way out (its deployment places a new worker if it needs one)."""
        return self.desired_state != DesiredState.STOPPED and self.state not in (
            WorkerState.DRAINING,
            WorkerState.STOPPED,
        )


class WorkerEvent(models.Model):
    """One state transition of a worker, with its reason: the worker's history."""

    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="events")
    from_state = models.CharField(max_length=16, choices=WorkerState.choices)
    to_state = models.CharField(max_length=16, choices=WorkerState.choices)
    reason = models.CharField(max_length=1000, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    # "agent" (the node agent reported it) or "scheduler" (the control plane decided it).
    source = models.CharField(max_length=16, default="agent")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["worker_id", "id"]

    def __str__(self) -> str:
        return f"worker {self.worker_id}: {self.from_state} -> {self.to_state}"
