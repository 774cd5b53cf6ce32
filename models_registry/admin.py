"""The registry in the Django admin. The rules are the models' (run by the admin's
RulesModelForm); grants and versions are written through models_registry/services.py, so the
audit log names these changes as every other face does (`grant`, `ungrant`, `set_state`)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import transaction
from django.forms import ModelForm
from django.http import HttpRequest

from controlplane.admin_base import AuditedAdmin, origin
from models_registry import services
from models_registry.models import EngineRuntime, Model, ModelGrant, ModelVersion


@admin.register(EngineRuntime)
class EngineRuntimeAdmin(AuditedAdmin):
    list_display = ["name", "engine", "version", "python_path", "created_at"]
    list_filter = ["engine", "version"]
    search_fields = ["name", "version", "python_path"]


class ModelVersionInline(admin.TabularInline):
    """Read-only: a version is added and changed on its own page, through the service."""

    model = ModelVersion
    fields = ["label", "state", "runtime", "weights_source"]
    readonly_fields = ["label", "state", "runtime", "weights_source"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Model)
class ModelAdmin(AuditedAdmin):
    list_display = ["name", "task", "created_at"]
    list_filter = ["task"]
    search_fields = ["name", "description"]
    inlines = [ModelVersionInline]


@admin.register(ModelVersion)
class ModelVersionAdmin(AuditedAdmin):
    list_display = [
        "model",
        "label",
        "state",
        "runtime",
        "dtype",
        "quantization",
        "price_input_per_million",
        "price_output_per_million",
    ]
    list_filter = ["state", "runtime", "dtype", "quantization", "model"]
    search_fields = ["label", "model__name", "weights_source"]
    list_select_related = ["model", "runtime"]

    def save_model(
        self, request: HttpRequest, obj: Any, form: ModelForm[Any], change: bool
    ) -> None:
        services.save_version(obj, origin=origin(request))


@admin.register(ModelGrant)
class ModelGrantAdmin(AuditedAdmin):
    list_display = ["tenant", "model", "created_at"]
    list_filter = ["tenant", "model"]
    search_fields = ["tenant__slug", "model__name"]
    list_select_related = ["tenant", "model"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # A grant is given or taken away, never changed into another.
        return ["tenant", "model"] if obj is not None else []

    def save_model(
        self, request: HttpRequest, obj: Any, form: ModelForm[Any], change: bool
    ) -> None:
        if not change:
            services.grant_model(obj, origin=origin(request))

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        services.ungrant_model(obj, origin=origin(request))

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        with transaction.atomic():
            for grant in queryset:
                services.ungrant_model(grant, origin=origin(request))
