from __future__ import annotations

import django_filters

from models_registry.models import EngineRuntime, Model, ModelGrant, ModelVersion


class EngineRuntimeFilter(django_filters.FilterSet):
    class Meta:
        model = EngineRuntime
        fields = ["name", "engine", "version"]


class ModelFilter(django_filters.FilterSet):
    class Meta:
        model = Model
        fields = ["name", "task"]


class ModelVersionFilter(django_filters.FilterSet):
    model_name = django_filters.CharFilter(field_name="model__name")

    class Meta:
        model = ModelVersion
        fields = ["model", "model_name", "label", "runtime", "state", "dtype", "quantization"]


class ModelGrantFilter(django_filters.FilterSet):
    # Plain ids: a choice filter would reveal which ids exist to a tenant member.
    tenant = django_filters.NumberFilter(field_name="tenant_id")
    model = django_filters.NumberFilter(field_name="model_id")

    class Meta:
        model = ModelGrant
        fields = ["tenant", "model"]
