"""Serializer fields for tenant-owned objects: a tenant is chosen only among those the actor
may write to."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import serializers
from rest_framework.request import Request

from tenants.models import Tenant
from tenants.roles import actor_of


def allowed_tenants(request: Request) -> QuerySet[Tenant]:
    """The tenants the requesting actor may write to: all for platform admins, its own
    for a tenant admin. A serializer's `tenant` field uses this, so that naming another
    tenant is a field error ("object does not exist"), never a cross-tenant write."""
    actor = actor_of(request.user)
    if actor.is_platform_admin:
        return Tenant.objects.all()
    if actor.tenant is None:
        return Tenant.objects.none()
    return Tenant.objects.filter(pk=actor.tenant.pk)


class TenantField(serializers.PrimaryKeyRelatedField[Tenant]):
    """A tenant chosen by id, limited to the tenants the actor may write to."""

    def get_queryset(self) -> QuerySet[Tenant]:
        request = self.context.get("request")
        if request is None:
            return Tenant.objects.none()
        return allowed_tenants(request)


def default_tenant(serializer: serializers.Serializer[Any], attrs: dict[str, Any]) -> Tenant:
    """The tenant a new tenant-owned object belongs to: the one given, else the actor's own."""
    tenant = attrs.get("tenant")
    if tenant is None and serializer.instance is not None:
        tenant = serializer.instance.tenant
    if tenant is None:
        request = serializer.context.get("request")
        actor = actor_of(request.user) if request is not None else None
        tenant = actor.tenant if actor is not None else None
    if tenant is None:
        raise serializers.ValidationError({"tenant": "This field is required."})
    return tenant
