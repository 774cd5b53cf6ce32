from __future__ import annotations

from django.contrib import admin

from controlplane.admin_base import AuditedAdmin
from models_registry.models import EngineRuntime, Model, ModelGrant, ModelVersion


@admin.register(EngineRuntime)
class EngineRuntimeAdmin(AuditedAdmin):
    list_display = ["name", "engine", "version", "python_path", "created_at"]
    list_filter = ["engine", "version"]
    search_fields = ["name", "version", "python_path"]


class ModelVersionInline(admin.TabularInline):
    model = ModelVersion
    fields = ["label", "state", "runtime", "weights_source"]
    extra = 0
    show_change_link = True


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


@admin.register(ModelGrant)
class ModelGrantAdmin(AuditedAdmin):
    list_display = ["tenant", "model", "created_at"]
    list_filter = ["tenant", "model"]
    search_fields = ["tenant__slug", "model__name"]
    list_select_related = ["tenant", "model"]
