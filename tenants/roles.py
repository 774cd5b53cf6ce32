"""Who is asking: one place that turns a user into a role and a tenant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tenants.models import Membership, Role, Tenant


@dataclass(frozen=True)
class Actor:
    role: Role | None
    tenant: Tenant | None

    @property
    def is_platform_admin(self) -> bool:
        return self.role == Role.PLATFORM_ADMIN

    @property
    def can_write_tenant(self) -> bool:
        return self.role in (Role.PLATFORM_ADMIN, Role.TENANT_ADMIN)

    @property
    def tenant_id(self) -> int | None:
        return self.tenant.pk if self.tenant else None


NOBODY = Actor(role=None, tenant=None)


def actor_of(user: Any) -> Actor:
    if user is None or not user.is_authenticated or not user.is_active:
        return NOBODY
    if user.is_superuser:
        return Actor(role=Role.PLATFORM_ADMIN, tenant=None)
    cached = getattr(user, "_controlplane_actor", None)
    if cached is not None:
        return cached
    membership = Membership.objects.select_related("tenant").filter(user=user).first()
    if membership is None:
        actor = NOBODY
    else:
        actor = Actor(role=Role(membership.role), tenant=membership.tenant)
    user._controlplane_actor = actor
    return actor
