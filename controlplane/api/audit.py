"""Read-only API over the audit log, narrowed to the tenant."""

from __future__ import annotations

import django_filters
from rest_framework import serializers

from controlplane.api.filters import UtcIsoDateTimeFilter
from controlplane.api.permissions import TenantMembersRead
from controlplane.api.viewsets import NarrowedReadOnlyViewSet
from controlplane.models import AuditEvent


class AuditEventSerializer(serializers.ModelSerializer[AuditEvent]):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "actor",
            "actor_repr",
            "via",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "tenant",
            "changes",
            "remote_addr",
            "created_at",
        ]
        read_only_fields = fields


class AuditEventFilter(django_filters.FilterSet):
    tenant = django_filters.NumberFilter(field_name="tenant_id")
    actor = django_filters.NumberFilter(field_name="actor_id")
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["tenant", "actor", "via", "action", "object_type", "object_id"]


class AuditEventViewSet(NarrowedReadOnlyViewSet):
    """Who changed what, from the dashboard or the API. Tenant members see their tenant's."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilter
    permission_classes = [TenantMembersRead]
    tenant_scoped = True
    search_fields = ["object_repr", "actor_repr", "action"]
    ordering_fields = ["created_at"]
