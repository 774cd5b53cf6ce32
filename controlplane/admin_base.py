"""What every Django admin page of the project shares: the model's every rule on its forms,
and its changes in the audit log (via="admin"), in the shapes every other face records.

The admin is a fourth write face, so it must not write what the API would refuse: its forms
are `RulesModelForm`s (controlplane/validation.py), and a model whose writes go through a
service (tenants/services.py, models_registry/services.py) overrides `save_model` to call it.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db import models, transaction
from django.forms import ModelForm
from django.http import HttpRequest

from controlplane.audit import Action, AuditVia, Origin, diff, state_of
from controlplane.validation import RulesFormMixin


class RulesModelForm(RulesFormMixin, forms.ModelForm):
    """The admin's form: Django's, plus the rules a ModelForm leaves out."""


def origin(request: HttpRequest) -> Origin:
    return Origin.of(request, AuditVia.ADMIN)


class AuditedAdmin(admin.ModelAdmin):
    """Records adds, changes and deletes made in the Django admin (via="admin")."""

    form = RulesModelForm

    def save_model(
        self, request: HttpRequest, obj: Any, form: ModelForm[Any], change: bool
    ) -> None:
        with transaction.atomic():
            before = state_of(type(obj).objects.get(pk=obj.pk)) if change and obj.pk else None
            super().save_model(request, obj, form, change)
            if before is None:
                origin(request).created(obj)
            else:
                origin(request).updated(obj, before)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        with transaction.atomic():
            origin(request).deleted(obj)
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        with transaction.atomic():
            for obj in queryset:
                origin(request).deleted(obj)
            super().delete_queryset(request, queryset)

    def audit_event(
        self,
        request: HttpRequest,
        action: Action | str,
        obj: models.Model,
        before: dict[str, Any] | None,
    ) -> None:
        """Record an admin action that no service records for it: what changed since `before`
        (a state_of), or the object's whole state without one."""
        after = state_of(obj)
        origin(request).record(action, obj, diff(before, after) if before else after)


class ReadOnlyAdmin(admin.ModelAdmin):
    """For records that only the system writes (usage, audit)."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
