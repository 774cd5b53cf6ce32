"""Publish cache invalidations whenever something the gateway caches changes."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import m2m_changed, post_delete, post_save

from controlplane.invalidation import publish

# model label -> kinds of cache it feeds
WATCHED = {
    "tenants.Tenant": ("keys", "quotas"),
    "tenants.ApiKey": ("keys",),
    "tenants.Quota": ("quotas",),
    "models_registry.Model": ("keys", "routes"),
    "models_registry.ModelGrant": ("keys",),
    "models_registry.ModelVersion": ("routes",),
    "nodes.Node": ("routes",),
    "nodes.Deployment": ("routes",),
    "nodes.Worker": ("routes",),
}


def _changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    label = sender._meta.label
    for kind in WATCHED.get(label, ()):
        publish(kind, instance.pk, source=label, gone=_gone(instance, kwargs.get("signal")))


def _gone(instance: Any, signal: Any) -> bool:
    """Whether a key (or a whole tenant's keys) can no longer be used: gateways then drop it
    at once instead of waiting for their snapshot to reload."""
    label = instance._meta.label
    if label not in ("tenants.ApiKey", "tenants.Tenant"):
        return False
    if signal is post_delete:
        return True
    return instance.revoked_at is not None if label == "tenants.ApiKey" else not instance.active


def connect() -> None:
    from django.apps import apps

    for label in WATCHED:
        model = apps.get_model(label)
        post_save.connect(_changed, sender=model, dispatch_uid=f"invalidate-save-{label}")
        post_delete.connect(_changed, sender=model, dispatch_uid=f"invalidate-delete-{label}")
    through = apps.get_model("tenants.ApiKey").allowed_models.through
    m2m_changed.connect(
        lambda sender, instance, **kw: publish("keys", instance.pk),
        sender=through,
        dispatch_uid="invalidate-apikey-models",
        weak=False,
    )
