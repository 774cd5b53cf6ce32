"""The registry's REST shapes. The rules are the models' (models_registry/models.py), run by
ValidatedModelSerializer; grants and version changes are written by models_registry/services.py."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from controlplane.api.serializers import ValidatedModelSerializer
from models_registry import engine_args
from models_registry.models import EngineRuntime, Model, ModelGrant, ModelVersion
from tenants.models import Tenant


class EngineRuntimeSerializer(ValidatedModelSerializer[EngineRuntime]):
    class Meta:
        model = EngineRuntime
        fields = ["id", "name", "engine", "version", "python_path", "environment", "created_at"]
        read_only_fields = ["created_at"]


class ModelSerializer(ValidatedModelSerializer[Model]):
    class Meta:
        model = Model
        fields = ["id", "name", "task", "description", "created_at"]
        read_only_fields = ["created_at"]


class ModelVersionSerializer(ValidatedModelSerializer[ModelVersion]):
    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "model",
            "label",
            "weights_source",
            "weights_revision",
            "weights_size_bytes",
            "runtime",
            "dtype",
            "quantization",
            "max_model_len",
            "enable_prefix_caching",
            "speculative_config",
            "kv_cache_bytes",
            "extra_args",
            "price_input_per_million",
            "price_cached_input_per_million",
            "price_output_per_million",
            "state",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def validate_extra_args(self, value: Any) -> Any:
        # The allow-list is the model's rule (ModelVersion.clean runs it too); the API only
        # answers with one message per argument, so a client can point at each bad one.
        problems = engine_args.validate(value)
        if problems:
            raise serializers.ValidationError(problems)
        return value


class ModelGrantSerializer(ValidatedModelSerializer[ModelGrant]):
    tenant = serializers.PrimaryKeyRelatedField(queryset=Tenant.objects.all())

    class Meta:
        model = ModelGrant
        fields = ["id", "tenant", "model", "created_at"]
        read_only_fields = ["created_at"]
