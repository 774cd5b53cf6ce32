"""What every Django admin page of the project shares: its changes land in the audit log."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import models
from django.forms import ModelForm
from django.http import HttpRequest

from controlplane import audit
from controlplane.api.viewsets import diff, snapshot


class AuditedAdmin(admin.ModelAdmin):
    """Records adds, changes and deletes made in the Django admin (via="admin")."""

    def save_model(
        self, request: HttpRequest, obj: Any, form: ModelForm[Any], change: bool
    ) -> None:
        before = snapshot(type(obj).objects.get(pk=obj.pk)) if change and obj.pk else {}
        super().save_model(request, obj, form, change)
        self.audit_event(request, "update" if change else "create", obj, before)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        self.audit_event(request, "delete", obj, None)
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for obj in queryset:
            self.audit_event(request, "delete", obj, None)
        super().delete_queryset(request, queryset)

    def audit_event(
        self, request: HttpRequest, action: str, obj: models.Model, before: dict[str, Any] | None
    ) -> None:
        after = snapshot(obj)
        changes = diff(before, after) if before else after
        audit.record(
            actor=request.user,
            via="admin",
            action=action,
            obj=obj,
            changes=changes,
            remote_addr=request.META.get("REMOTE_ADDR") or None,
        )


class ReadOnlyAdmin(admin.ModelAdmin):
    """For records that only the system writes (usage, audit)."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
