"""The audit log: one call records who changed what, through which face.

Every face (REST API, dashboard, Django admin, management commands) records the same change
under the same action name, from the one vocabulary below, and says which face it was with
`via` (AuditVia). A report or an alert on the trail then needs to know one name per change.

The changes have one shape too: a creation or a deletion records the object's `state_of()`,
an update the `diff()` of its states before and after ({field: [old, new]}). A face says who
and how with an `Origin` and hands it to the service that makes the change
(tenants/services.py, models_registry/services.py), or records a plain save through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


# Field names never copied into an audit event's `changes`.
SECRET_FIELDS = frozenset({"hashed_key", "hashed_token", "credential_hash", "password"})
# Bookkeeping that changes on every save and says nothing about the change.
NOISE_FIELDS = frozenset({"updated_at"})


def state_of(obj: models.Model) -> dict[str, Any]:
    """The audit-worthy state of an object: its concrete fields and its many-to-many ids."""
    state: dict[str, Any] = {}
    for field in obj._meta.concrete_fields:
        if field.name in SECRET_FIELDS:
            continue
        state[field.name] = field.value_from_object(obj)
    if obj.pk is not None:
        for m2m in obj._meta.many_to_many:
            state[m2m.name] = sorted(getattr(obj, m2m.name).values_list("pk", flat=True))
    return state


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[Any]]:
    """{field: [old, new]} for every field whose value changed."""
    return {
        name: [before.get(name), value]
        for name, value in after.items()
        if name not in NOISE_FIELDS and before.get(name) != value
    }


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


@dataclass(frozen=True)
class Origin:
    """Who makes a change and through which face: what a service needs to record it."""

    actor: Any
    via: AuditVia | str
    remote_addr: str | None = None

    @classmethod
    def of(cls, request: Any, via: AuditVia | str) -> Origin:
        """The signed-in user of an HTTP request (Django's or DRF's) and its client address."""
        address = request.META.get("REMOTE_ADDR")
        return cls(actor=request.user, via=via, remote_addr=str(address) if address else None)

    def record(
        self, action: Action | str, obj: models.Model, changes: dict[str, Any] | None = None
    ) -> AuditEvent:
        return record(
            actor=self.actor,
            via=self.via,
            action=action,
            obj=obj,
            changes=changes,
            remote_addr=self.remote_addr,
        )

    def created(self, obj: models.Model, action: Action = Action.CREATE) -> AuditEvent:
        return self.record(action, obj, state_of(obj))

    def updated(
        self, obj: models.Model, before: Mapping[str, Any], action: Action = Action.UPDATE
    ) -> AuditEvent:
        """Record what changed since `before` (a state_of of the object as it was)."""
        return self.record(action, obj, diff(before, state_of(obj)))

    def deleted(self, obj: models.Model, action: Action = Action.DELETE) -> AuditEvent:
        """Call before the delete: afterwards the object has no primary key to name."""
        return self.record(action, obj, state_of(obj))


SYSTEM = Origin(actor=None, via=AuditVia.SYSTEM)
# A management command: run by whoever has the server's shell, not by a signed-in user.
CLI = Origin(actor=None, via=AuditVia.CLI)
