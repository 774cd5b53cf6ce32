from __future__ import annotations

from typing import Any

from django.db import models
from rest_framework.serializers import BaseSerializer

from controlplane.api.permissions import IsPlatformAdmin, TenantMembersRead
from controlplane.api.viewsets import AuditedModelViewSet
from models_registry import services
from models_registry.api import filters, serializers
from models_registry.models import EngineRuntime, Model, ModelGrant, ModelVersion


class EngineRuntimeViewSet(AuditedModelViewSet):
    """Installed engines (fleet-wide: platform admins only)."""

    queryset = EngineRuntime.objects.all()
    serializer_class = serializers.EngineRuntimeSerializer
    filterset_class = filters.EngineRuntimeFilter
    permission_classes = [IsPlatformAdmin]
    search_fields = ["name", "version"]
    ordering_fields = ["name", "version", "created_at"]


class ModelViewSet(AuditedModelViewSet):
    """Models by the name clients send. Tenant members read the models granted to them."""

    queryset = Model.objects.all()
    serializer_class = serializers.ModelSerializer
    filterset_class = filters.ModelFilter
    permission_classes = [TenantMembersRead]
    tenant_scoped = True
    tenant_lookup = "grants__tenant"
    tenant_lookup_distinct = True
    search_fields = ["name", "description"]
    ordering_fields = ["name", "task", "created_at"]


class ModelVersionViewSet(AuditedModelViewSet):
    """What actually runs: weights, engine settings and prices (platform admins only).

    A change of `state` is recorded as `set_state`, as the dashboard and the admin record it."""

    queryset = ModelVersion.objects.select_related("model", "runtime").all()
    serializer_class = serializers.ModelVersionSerializer
    filterset_class = filters.ModelVersionFilter
    permission_classes = [IsPlatformAdmin]
    search_fields = ["label", "model__name", "weights_source"]
    ordering_fields = ["label", "state", "created_at", "updated_at"]

    def perform_create(self, serializer: BaseSerializer[Any]) -> None:
        version = ModelVersion(**serializer.validated_data)
        serializer.instance = services.save_version(version, origin=self.origin)

    def perform_update(self, serializer: BaseSerializer[Any]) -> None:
        version = serializer.instance
        assert isinstance(version, ModelVersion)
        for name, value in serializer.validated_data.items():
            setattr(version, name, value)
        services.save_version(version, origin=self.origin)


class ModelGrantViewSet(AuditedModelViewSet):
    """Which tenant may use which model. Tenant members read theirs; platform admins write."""

    queryset = ModelGrant.objects.select_related("tenant", "model").all()
    serializer_class = serializers.ModelGrantSerializer
    filterset_class = filters.ModelGrantFilter
    permission_classes = [TenantMembersRead]
    tenant_scoped = True
    http_method_names = ["get", "post", "delete", "head", "options"]
    ordering_fields = ["created_at"]

    def perform_create(self, serializer: BaseSerializer[Any]) -> None:
        grant = ModelGrant(**serializer.validated_data)
        serializer.instance = services.grant_model(grant, origin=self.origin)

    def perform_destroy(self, instance: models.Model) -> None:
        assert isinstance(instance, ModelGrant)
        services.ungrant_model(instance, origin=self.origin)
