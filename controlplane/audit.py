"""The audit log: one call records who changed what, from the dashboard or the API."""

from __future__ import annotations

from typing import Any

from django.db import models

from controlplane.models import AuditEvent


def tenant_of(obj: models.Model) -> Any:
    """The tenant an object belongs to, if any, so tenant admins can read their own trail."""
    from tenants.models import Tenant

    if isinstance(obj, Tenant):
        return obj
    return getattr(obj, "tenant", None)


def record(
    *,
    actor: Any,
    via: str,
    action: str,
    obj: models.Model,
    changes: dict[str, Any] | None = None,
    remote_addr: str | None = None,
) -> AuditEvent:
    """Record an action. `changes` maps field names to [old, new] (or to the new value)."""
    user = actor if getattr(actor, "is_authenticated", False) else None
    return AuditEvent.objects.create(
        actor=user,
        actor_repr=str(user) if user else "system",
        via=via,
        action=action,
        object_type=obj._meta.label,
        object_id=str(obj.pk or ""),
        object_repr=str(obj)[:300],
        tenant=tenant_of(obj),
        changes=_jsonable(changes or {}),
        remote_addr=remote_addr,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, models.Model):
        return str(value)
    return str(value)
