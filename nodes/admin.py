from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from controlplane.admin_base import AuditedAdmin, ReadOnlyAdmin
from nodes import credentials
from nodes.models import Deployment, Gpu, Node, Worker, WorkerEvent


class GpuInline(admin.TabularInline):
    model = Gpu
    fields = ["index", "uuid", "name", "memory_total_bytes", "memory_used_bytes"]
    readonly_fields = ["index", "uuid", "name", "memory_total_bytes", "memory_used_bytes"]
    extra = 0
    can_delete = False


@admin.register(Node)
class NodeAdmin(AuditedAdmin):
    """Nodes. The agent credential is issued with the "issue a new credential" action and
    shown once; the admin never displays its hash."""

    list_display = ["name", "address", "state", "last_heartbeat_at", "agent_version"]
    list_filter = ["state"]
    search_fields = ["name", "address"]
    readonly_fields = [
        "credential_prefix",
        "last_heartbeat_at",
        "cpu_count",
        "memory_bytes",
        "agent_version",
    ]
    inlines = [GpuInline]
    actions = ["issue_credential"]

    @admin.action(description="Issue a new agent credential (the old one stops working)")
    def issue_credential(self, request: HttpRequest, queryset: Any) -> None:
        for node in queryset:
            plaintext = credentials.issue(node)
            self.audit_event(request, "rotate", node, None)
            messages.warning(
                request, f"Credential of {node.name}: {plaintext} — shown only this once."
            )


@admin.register(Gpu)
class GpuAdmin(AuditedAdmin):
    list_display = ["node", "index", "name", "uuid", "memory_total_bytes", "memory_used_bytes"]
    list_filter = ["node", "name"]
    search_fields = ["uuid", "name", "node__name"]
    list_select_related = ["node"]


@admin.register(Deployment)
class DeploymentAdmin(AuditedAdmin):
    list_display = [
        "name",
        "model_version",
        "replicas",
        "gpus_per_replica",
        "placement_strategy",
        "traffic_weight",
        "desired_state",
    ]
    list_filter = ["desired_state", "placement_strategy"]
    search_fields = ["name", "model_version__model__name", "model_version__label"]
    list_select_related = ["model_version__model"]


@admin.register(Worker)
class WorkerAdmin(AuditedAdmin):
    """Workers; their engine key is derived (nodes.secrets) and never displayed."""

    list_display = ["__str__", "node", "state", "port", "pid", "restarts", "updated_at"]
    list_filter = ["state", "desired_state", "node"]
    search_fields = ["deployment__name", "node__name", "last_error"]
    list_select_related = ["deployment", "node"]


@admin.register(WorkerEvent)
class WorkerEventAdmin(ReadOnlyAdmin):
    """A worker's state history, as the agent and the scheduler reported it."""

    list_display = [
        "created_at",
        "worker",
        "from_state",
        "to_state",
        "source",
        "exit_code",
        "reason",
    ]
    list_filter = ["to_state", "source"]
    search_fields = ["worker__deployment__name", "reason"]
    list_select_related = ["worker__deployment"]
