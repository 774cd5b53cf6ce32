from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request

from tenants.roles import actor_of


class IsPlatformAdmin(permissions.BasePermission):
    """The default: only platform admins (and superusers) manage the fleet."""

    message = "This needs a platform admin."

    def has_permission(self, request: Request, view: Any) -> bool:
        return actor_of(request.user).is_platform_admin


class TenantScoped(permissions.BasePermission):
    """Platform admins everything; tenant members read their tenant; tenant admins write it.

    Views using this must also narrow their queryset to the actor's tenant, so that another
    tenant's objects are 404, not 403 (their existence is not revealed).
    """

    message = "Your role does not allow this."

    def has_permission(self, request: Request, view: Any) -> bool:
        actor = actor_of(request.user)
        if actor.role is None:
            return False
        if request.method in permissions.SAFE_METHODS:
            return True
        return actor.can_write_tenant


class TenantReadOnly(TenantScoped):
    """Tenant members may read; only platform admins may write."""

    def has_permission(self, request: Request, view: Any) -> bool:
        actor = actor_of(request.user)
        if actor.role is None:
            return False
        if request.method in permissions.SAFE_METHODS:
            return True
        return actor.is_platform_admin
