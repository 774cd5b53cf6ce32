from __future__ import annotations

from typing import Any

from rest_framework import serializers

from nodes.models import DeviceKind, WorkerState
from tenants.models import slug_validator


class DeviceSerializer(serializers.Serializer):
    index = serializers.IntegerField(min_value=0, max_value=255)
    uuid = serializers.CharField(max_length=100)
    name = serializers.CharField(max_length=200)
    kind = serializers.ChoiceField(choices=DeviceKind.choices, default=DeviceKind.GPU)
    memory_total_bytes = serializers.IntegerField(min_value=1)
    memory_used_bytes = serializers.IntegerField(min_value=0, default=0)


class RegisterSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=63, validators=[slug_validator])
    address = serializers.CharField(max_length=255)
    agent_version = serializers.CharField(max_length=50, required=False, default="")
    cpu_count = serializers.IntegerField(min_value=0, default=0)
    memory_bytes = serializers.IntegerField(min_value=0, default=0)
    devices = DeviceSerializer(many=True)

    def validate_devices(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        uuids = [d["uuid"] for d in value]
        indexes = [d["index"] for d in value]
        if len(set(uuids)) != len(uuids):
            raise serializers.ValidationError("Device UUIDs must be unique.")
        if len(set(indexes)) != len(indexes):
            raise serializers.ValidationError("Device indexes must be unique.")
        return value


class DeviceUsageSerializer(serializers.Serializer):
    uuid = serializers.CharField(max_length=100)
    memory_used_bytes = serializers.IntegerField(min_value=0)


class HeartbeatSerializer(serializers.Serializer):
    # What runs is learnt from the transitions the agent reports, not from heartbeats (an
    # older agent's `running_workers` list is ignored like any unknown field).
    devices = DeviceUsageSerializer(many=True, required=False, default=list)


class TransitionSerializer(serializers.Serializer):
    state = serializers.ChoiceField(choices=WorkerState.choices)
    reason = serializers.CharField(max_length=1000, required=False, default="", allow_blank=True)
    pid = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    port = serializers.IntegerField(min_value=1, max_value=65535, required=False, allow_null=True)
    exit_code = serializers.IntegerField(required=False, allow_null=True)
    log_tail = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)


class LogTailSerializer(serializers.Serializer):
    tail = serializers.CharField(allow_blank=True, trim_whitespace=False)
