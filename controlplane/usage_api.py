"""Read-only API over metering (usage records) and the audit log, narrowed to the tenant."""

from __future__ import annotations

import django_filters
from rest_framework import serializers

from controlplane.api import UtcIsoDateTimeFilter
from controlplane.api_base import NarrowedReadOnlyViewSet, TenantMembersRead
from controlplane.models import AuditEvent, UsageRecord, UsageStatus


class UsageRecordSerializer(serializers.ModelSerializer[UsageRecord]):
    total_tokens = serializers.IntegerField(read_only=True)

    class Meta:
        model = UsageRecord
        fields = [
            "id",
            "request_id",
            "tenant",
            "api_key",
            "model",
            "model_version",
            "worker",
            "endpoint",
            "streamed",
            "prompt_tokens",
            "cached_tokens",
            "completion_tokens",
            "total_tokens",
            "latency_ms",
            "time_to_first_token_ms",
            "status",
            "http_status",
            "cost",
            "created_at",
        ]
        read_only_fields = fields


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


class UsageRecordFilter(django_filters.FilterSet):
    # Plain ids: a choice filter would reveal to a tenant which ids exist elsewhere.
    tenant = django_filters.NumberFilter(field_name="tenant_id")
    api_key = django_filters.NumberFilter(field_name="api_key_id")
    model = django_filters.NumberFilter(field_name="model_id")
    model_name = django_filters.CharFilter(field_name="model__name")
    status = django_filters.ChoiceFilter(choices=UsageStatus.choices)
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = UsageRecord
        fields = ["tenant", "api_key", "model", "model_name", "endpoint", "status", "streamed"]


class AuditEventFilter(django_filters.FilterSet):
    tenant = django_filters.NumberFilter(field_name="tenant_id")
    actor = django_filters.NumberFilter(field_name="actor_id")
    created_after = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["tenant", "actor", "via", "action", "object_type", "object_id"]


class UsageRecordViewSet(NarrowedReadOnlyViewSet):
    """One record per metered inference request (written by the gateway)."""

    queryset = UsageRecord.objects.all()
    serializer_class = UsageRecordSerializer
    filterset_class = UsageRecordFilter
    permission_classes = [TenantMembersRead]
    tenant_scoped = True
    search_fields = ["request_id"]
    ordering_fields = ["created_at", "cost", "latency_ms", "prompt_tokens", "completion_tokens"]


class AuditEventViewSet(NarrowedReadOnlyViewSet):
    """Who changed what, from the dashboard or the API. Tenant members see their tenant's."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilter
    permission_classes = [TenantMembersRead]
    tenant_scoped = True
    search_fields = ["object_repr", "actor_repr", "action"]
    ordering_fields = ["created_at"]
