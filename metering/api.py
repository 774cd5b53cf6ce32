"""Read-only API over metering: usage records, narrowed to the tenant."""

from __future__ import annotations

import django_filters
from rest_framework import serializers

from controlplane.api.filters import UtcIsoDateTimeFilter
from controlplane.api.permissions import TenantMembersRead
from controlplane.api.viewsets import NarrowedReadOnlyViewSet
from controlplane.models import UsageRecord, UsageStatus


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


class UsageRecordViewSet(NarrowedReadOnlyViewSet):
    """One record per metered inference request (written by the gateway)."""

    queryset = UsageRecord.objects.all()
    serializer_class = UsageRecordSerializer
    filterset_class = UsageRecordFilter
    permission_classes = [TenantMembersRead]
    tenant_scoped = True
    search_fields = ["request_id"]
    ordering_fields = ["created_at", "cost", "latency_ms", "prompt_tokens", "completion_tokens"]
