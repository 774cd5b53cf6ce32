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
    for kind in WATCHED.get(sender._meta.label, ()):
        publish(kind, instance.pk)


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
