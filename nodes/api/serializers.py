from __future__ import annotations

from typing import Any

from rest_framework import serializers

from controlplane.api.serializers import ValidatedModelSerializer
from controlplane.validation import string_map_problem
from nodes.models import Deployment, Gpu, Node, Worker


class NodeSerializer(serializers.ModelSerializer[Node]):
    class Meta:
        model = Node
        fields = [
            "id",
            "name",
            "address",
            "labels",
            "state",
            "state_reason",
            "last_heartbeat_at",
            "cpu_count",
            "memory_bytes",
            "agent_version",
            "credential_prefix",
            "created_at",
            "updated_at",
        ]
        # Reported by the node agent, not set by people.
        read_only_fields = [
            "last_heartbeat_at",
            "cpu_count",
            "memory_bytes",
            "agent_version",
            "credential_prefix",
            "created_at",
            "updated_at",
        ]

    def validate_labels(self, value: Any) -> Any:
        # The one string-map check (controlplane/validation.py); Node itself has no clean().
        problem = string_map_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value


class NodeCreatedSerializer(NodeSerializer):
    credential = serializers.CharField(
        source="_plaintext",
        read_only=True,
        help_text="The node agent's credential. Shown only in this response: store it now.",
    )

    class Meta(NodeSerializer.Meta):
        fields = [*NodeSerializer.Meta.fields, "credential"]


class GpuSerializer(serializers.ModelSerializer[Gpu]):
    class Meta:
        model = Gpu
        fields = ["id", "node", "index", "uuid", "name", "memory_total_bytes", "memory_used_bytes"]
        read_only_fields = fields


class DeploymentSerializer(ValidatedModelSerializer[Deployment]):
    """Its rules are Deployment's (nodes/models.py), run by ValidatedModelSerializer."""

    class Meta:
        model = Deployment
        fields = [
            "id",
            "name",
            "model_version",
            "replicas",
            "gpus_per_replica",
            "placement_strategy",
            "label_selector",
            "traffic_weight",
            "desired_state",
            "unschedulable_reason",
            "created_at",
            "updated_at",
        ]
        # The scheduler writes why it cannot place a deployment.
        read_only_fields = ["unschedulable_reason", "created_at", "updated_at"]


class WorkerSerializer(serializers.ModelSerializer[Worker]):
    """A worker as the API shows it. Its engine key (nodes.secrets) is deliberately absent."""

    class Meta:
        model = Worker
        fields = [
            "id",
            "deployment",
            "node",
            "gpus",
            "desired_state",
            "state",
            "state_reason",
            "port",
            "pid",
            "restarts",
            "generation",
            "last_exit_code",
            "last_error",
            "started_at",
            "ready_at",
            "stopped_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields
