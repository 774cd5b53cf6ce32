"""The audit log: one call records who changed what, through which face.

Every face (REST API, dashboard, Django admin, management commands) records the same change
under the same action name, from the one vocabulary below, and says which face it was with
`via` (AuditVia). A report or an alert on the trail then needs to know one name per change.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from controlplane.models import AuditEvent, AuditVia

Via = AuditVia


class Action(models.TextChoices):
    """Every action name the trail uses. Plain edits are create/update/delete; a change with a
    meaning of its own has a verb of its own, whichever face made it."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    ISSUE = "issue"  # an API key, API token or node credential, shown once
    ROTATE = "rotate"  # a secret replaced: a key by a successor (the old one expires after a
    # grace), or a node credential by a new one
    REVOKE = "revoke"
    GRANT = "grant"  # a model granted to a tenant
    UNGRANT = "ungrant"
    SCALE = "scale"  # a deployment's replicas (or its traffic weight, or desired state)
    SET_STATE = "set_state"  # a model version activated, retired or back to draft
    CORDON = "cordon"
    DRAIN = "drain"
    UNCORDON = "uncordon"
    RESTART = "restart"


def tenant_of(obj: models.Model) -> Any:
    """The tenant an object belongs to, if any, so tenant admins can read their own trail."""
    from tenants.models import Tenant

    if isinstance(obj, Tenant):
        return obj
    return getattr(obj, "tenant", None)


def record(
    *,
    actor: Any,
    via: AuditVia | str,
    action: Action | str,
    obj: models.Model,
    changes: dict[str, Any] | None = None,
    remote_addr: str | None = None,
) -> AuditEvent:
    """Record an action. `changes` maps field names to [old, new] (or to the new value)."""
    if via not in AuditVia.values:
        raise ValueError(f"unknown audit face {via!r}: one of {', '.join(AuditVia.values)}")
    if action not in Action.values:
        raise ValueError(f"unknown audit action {action!r}: add it to audit.Action first")
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
