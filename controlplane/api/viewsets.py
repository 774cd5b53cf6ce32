"""Base classes every provisioning-API viewset and serializer builds on.

Three concerns live here, once:

- tenant narrowing: a tenant member's queryset holds only its own tenant's rows, so another
  tenant's objects are 404 (their existence is not revealed), never 403;
- writes in a transaction: a failing write leaves nothing half-written;
- the audit trail: every create, update, delete and action records an AuditEvent
  (`via="api"`) through `self.origin`, in the shapes controlplane/audit.py defines; a write
  that is more than a save calls its service (tenants/services.py, ...) with that origin.
"""

from __future__ import annotations

from typing import Any

from django.db import models, transaction
from django.db.models import QuerySet
from rest_framework import serializers, viewsets

from controlplane.audit import AuditVia, Origin, state_of
from tenants.roles import Actor, actor_of


class ActorMixin:
    """`self.actor`: who is asking, as a role and a tenant (tenants.roles)."""

    request: Any  # the view's DRF request

    @property
    def actor(self) -> Actor:
        return actor_of(self.request.user)


class TenantNarrowedMixin(ActorMixin):
    """Narrow the queryset to the actor's tenant through `tenant_lookup`.

    Platform admins see everything; a tenant member sees only rows whose `tenant_lookup`
    is its tenant; anyone else sees nothing.
    """

    tenant_lookup: str = "tenant"
    # Set when the lookup crosses a to-many relation, so a row cannot appear twice.
    tenant_lookup_distinct: bool = False

    def narrow_to_tenant(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        actor = self.actor
        if actor.is_platform_admin:
            return queryset
        if actor.tenant is None:
            return queryset.none()
        queryset = queryset.filter(**{self.tenant_lookup: actor.tenant.pk})
        return queryset.distinct() if self.tenant_lookup_distinct else queryset


class AuditedMixin(ActorMixin):
    """Runs every write in a transaction and records it in the audit log."""

    @property
    def origin(self) -> Origin:
        """Who is writing, through the REST API: handed to services and the audit log."""
        return Origin.of(self.request, AuditVia.API)

    def audit(self, action: str, obj: models.Model, changes: dict[str, Any] | None = None) -> None:
        self.origin.record(action, obj, changes)

    def perform_create(self, serializer: serializers.BaseSerializer[Any]) -> None:
        with transaction.atomic():
            obj = serializer.save()
            self.origin.created(obj)

    def perform_update(self, serializer: serializers.BaseSerializer[Any]) -> None:
        with transaction.atomic():
            before = state_of(serializer.instance)  # type: ignore[arg-type]
            obj = serializer.save()
            obj.refresh_from_db()
            self.origin.updated(obj, before)

    def perform_destroy(self, instance: models.Model) -> None:
        with transaction.atomic():
            # Recorded first: after the delete the object has no primary key to name.
            self.origin.deleted(instance)
            instance.delete()


class AuditedModelViewSet(AuditedMixin, TenantNarrowedMixin, viewsets.ModelViewSet):
    """A model viewset whose writes are transactional and audited, narrowed to the tenant
    when `tenant_scoped` is true."""

    tenant_scoped = False

    def get_queryset(self) -> QuerySet[Any]:
        queryset = super().get_queryset()
        return self.narrow_to_tenant(queryset) if self.tenant_scoped else queryset


class NarrowedReadOnlyViewSet(TenantNarrowedMixin, viewsets.ReadOnlyModelViewSet):
    tenant_scoped = False

    def get_queryset(self) -> QuerySet[Any]:
        queryset = super().get_queryset()
        return self.narrow_to_tenant(queryset) if self.tenant_scoped else queryset
