from __future__ import annotations

from typing import Any

from rest_framework import serializers

from controlplane.validation import string_map_problem
from models_registry import engine_args
from models_registry.models import EngineRuntime, Model, ModelGrant, ModelVersion
from tenants.models import Tenant


class EngineRuntimeSerializer(serializers.ModelSerializer[EngineRuntime]):
    class Meta:
        model = EngineRuntime
        fields = ["id", "name", "engine", "version", "python_path", "environment", "created_at"]
        read_only_fields = ["created_at"]

    def validate_environment(self, value: Any) -> Any:
        problem = string_map_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    def validate_python_path(self, value: str) -> str:
        if not value.startswith("/"):
            raise serializers.ValidationError("Must be an absolute path.")
        return value


class ModelSerializer(serializers.ModelSerializer[Model]):
    class Meta:
        model = Model
        fields = ["id", "name", "task", "description", "created_at"]
        read_only_fields = ["created_at"]


class ModelVersionSerializer(serializers.ModelSerializer[ModelVersion]):
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
        problems = engine_args.validate(value)
        if problems:
            # One message per argument, so a client can point at each bad one.
            raise serializers.ValidationError(problems)
        return value

    def validate_speculative_config(self, value: Any) -> Any:
        if value is not None and not isinstance(value, dict):
            raise serializers.ValidationError(
                "Expected an object (vLLM's --speculative-config) or null."
            )
        return value

    def validate_max_model_len(self, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise serializers.ValidationError("Must be at least 1.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.instance is not None and "model" in attrs and attrs["model"] != self.instance.model:
            raise serializers.ValidationError(
                {"model": "A version cannot move to another model: create a new version."}
            )
        return attrs


class ModelGrantSerializer(serializers.ModelSerializer[ModelGrant]):
    tenant = serializers.PrimaryKeyRelatedField(queryset=Tenant.objects.all())

    class Meta:
        model = ModelGrant
        fields = ["id", "tenant", "model", "created_at"]
        read_only_fields = ["created_at"]
