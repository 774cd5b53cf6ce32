from __future__ import annotations

from typing import Any

import django_filters
from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from tenants.models import ApiKey, ApiToken, KeyStatus, Quota, Role, Tenant, key_status_q


class TenantFilter(django_filters.FilterSet):
    class Meta:
        model = Tenant
        fields = {"slug": ["exact"], "active": ["exact"], "priority_class": ["exact"]}


class UserFilter(django_filters.FilterSet):
    role = django_filters.ChoiceFilter(field_name="membership__role", choices=Role.choices)
    # Plain ids, not choices: a choice filter would answer "not a valid choice" for ids that
    # do not exist and so tell a tenant which ids other tenants have.
    tenant = django_filters.NumberFilter(field_name="membership__tenant_id")

    class Meta:
        model = get_user_model()
        fields = ["username", "is_active", "role", "tenant"]


class ApiKeyFilter(django_filters.FilterSet):
    tenant = django_filters.NumberFilter(field_name="tenant_id")
    status = django_filters.ChoiceFilter(
        choices=[(status.value, status.value) for status in KeyStatus],
        method="filter_status",
        label="active, expired or revoked",
    )

    class Meta:
        model = ApiKey
        fields = ["tenant", "name", "prefix", "status"]

    def filter_status(self, queryset: QuerySet[ApiKey], name: str, value: Any) -> QuerySet[ApiKey]:
        return queryset.filter(key_status_q(value))


class ApiTokenFilter(django_filters.FilterSet):
    class Meta:
        model = ApiToken
        fields = ["name", "prefix"]


class QuotaFilter(django_filters.FilterSet):
    tenant = django_filters.NumberFilter(field_name="tenant_id")
    api_key = django_filters.NumberFilter(field_name="api_key_id")
    model = django_filters.NumberFilter(field_name="model_id")

    class Meta:
        model = Quota
        fields = ["tenant", "api_key", "model"]
