"""Every permission class of the provisioning API, in one file.

Tenant scoping is two halves: these classes decide by role, and the viewsets narrow their
querysets to the actor's tenant (viewsets.TenantNarrowedMixin), so that another tenant's object
is 404 (its existence is not revealed), never 403.
"""

from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request

from tenants.roles import Actor, actor_of


class IsPlatformAdmin(permissions.BasePermission):
    """The default: only platform admins (and superusers) manage the fleet."""

    message = "This needs a platform admin."

    def has_permission(self, request: Request, view: Any) -> bool:
        return actor_of(request.user).is_platform_admin


class HasRole(permissions.BasePermission):
    """Anyone with a role (platform admin, tenant admin or viewer), for what is their own."""

    message = "Your user has no role: ask a platform admin for one."

    def has_permission(self, request: Request, view: Any) -> bool:
        return actor_of(request.user).role is not None


def _is_detail_route(view: Any) -> bool:
    lookup = getattr(view, "lookup_url_kwarg", None) or getattr(view, "lookup_field", "pk")
    return lookup in getattr(view, "kwargs", {})


class _TenantObjectPermission(permissions.BasePermission):
    """Tenant-scoped access where a write to a single object is judged *after* the
    tenant-narrowed lookup: another tenant's object is then 404 for every method, exactly
    as for reads, and only one's own objects can be 403."""

    message = "Your role does not allow this."

    def may_write(self, actor: Actor) -> bool:
        raise NotImplementedError

    def has_permission(self, request: Request, view: Any) -> bool:
        actor = actor_of(request.user)
        if actor.role is None:
            return False
        if request.method in permissions.SAFE_METHODS or self.may_write(actor):
            return True
        return _is_detail_route(view)

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return True
        return self.may_write(actor_of(request.user))


class TenantMembersRead(_TenantObjectPermission):
    """Tenant members read their tenant's objects; only platform admins write."""

    message = "Only a platform admin can change this."

    def may_write(self, actor: Actor) -> bool:
        return actor.is_platform_admin


class TenantAdminsWrite(_TenantObjectPermission):
    """Tenant members read their tenant's objects; tenant admins (and platform admins) write."""

    message = "Your role (viewer) is read-only."

    def may_write(self, actor: Actor) -> bool:
        return actor.can_write_tenant
