"""Every write to grants and versions that is more than a save, once: grant and ungrant a
model, create or change a version (its state change is an action of its own).

The REST API, the dashboard and the Django admin call these, so each change runs the model's
rules (`full_clean`), in a transaction, and leaves the same audit event from every face.
"""

from __future__ import annotations

from django.db import transaction

from controlplane import validation
from controlplane.audit import Action, Origin, diff, state_of
from models_registry.models import ModelGrant, ModelVersion, VersionState


def grant_model(grant: ModelGrant, *, origin: Origin) -> ModelGrant:
    """Save `grant` (its tenant and model set by a face): the tenant may then use the model,
    and its keys and quotas may name it."""
    validation.full_clean(grant)
    with transaction.atomic():
        grant.save(force_insert=True)
        origin.created(grant, Action.GRANT)
    return grant


def ungrant_model(grant: ModelGrant, *, origin: Origin) -> None:
    with transaction.atomic():
        origin.deleted(grant, Action.UNGRANT)
        grant.delete()


def save_version(version: ModelVersion, *, origin: Origin) -> ModelVersion:
    """Create a version, or save the changes made to it: the state change is recorded as
    `set_state`, every other change as `update`, whichever face made them."""
    validation.full_clean(version)
    with transaction.atomic():
        if version._state.adding:
            version.save(force_insert=True)
            origin.created(version)
            return version
        before = state_of(ModelVersion.objects.select_for_update().get(pk=version.pk))
        version.save()
        changes = diff(before, state_of(version))
        state = changes.pop("state", None)
        if state is not None:
            origin.record(Action.SET_STATE, version, {"state": state})
        if changes or state is None:
            origin.record(Action.UPDATE, version, changes)
    return version


def set_version_state(
    version: ModelVersion, state: VersionState | str, *, origin: Origin
) -> ModelVersion:
    """Activate, retire or send back to draft. Deployments of a retired version keep running
    (they can be scaled down); a retired version cannot be deployed anew."""
    version.state = state
    return save_version(version, origin=origin)
