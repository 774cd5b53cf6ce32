from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from controlplane.admin_base import AuditedAdmin, ReadOnlyAdmin, origin
from nodes import credentials, services
from nodes.models import Deployment, Gpu, Node, Worker, WorkerEvent


def run_for_each(request: HttpRequest, queryset: Any, operation: Any, done: str) -> None:
    """An admin action: one nodes.services operation per selected row, each in its own
    transaction; a refusal is reported and leaves the other rows done."""
    who = origin(request)
    count = 0
    for obj in queryset:
        try:
            operation(obj, origin=who)
            count += 1
        except services.Refused as exc:
            messages.error(request, str(exc))
    if count:
        messages.success(request, f"{done}: {count}.")


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
    # The state changes through the actions (nodes.services), as on every other face.
    readonly_fields = [
        "state",
        "state_reason",
        "credential_prefix",
        "last_heartbeat_at",
        "cpu_count",
        "memory_bytes",
        "agent_version",
    ]
    inlines = [GpuInline]
    actions = ["issue_credential", "cordon", "drain", "uncordon"]

    @admin.action(description="Cordon: keep their workers, place no new ones")
    def cordon(self, request: HttpRequest, queryset: Any) -> None:
        run_for_each(request, queryset, services.cordon_node, "Nodes cordoned")

    @admin.action(description="Drain: move their workers elsewhere")
    def drain(self, request: HttpRequest, queryset: Any) -> None:
        run_for_each(request, queryset, services.drain_node, "Nodes draining")

    @admin.action(description="Uncordon: place workers on them again")
    def uncordon(self, request: HttpRequest, queryset: Any) -> None:
        run_for_each(request, queryset, services.uncordon_node, "Nodes uncordoned")

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
    """Workers; their engine key is derived (nodes.secrets) and never displayed.

    What a worker is doing belongs to its node agent and the scheduler, and changes only
    through the state machine (nodes.states): those fields are read-only here. People ask for
    a restart or a drain with the actions, as on the dashboard and the REST API.
    """

    list_display = ["__str__", "node", "state", "port", "pid", "restarts", "updated_at"]
    list_filter = ["state", "desired_state", "node"]
    search_fields = ["deployment__name", "node__name", "last_error"]
    list_select_related = ["deployment", "node"]
    readonly_fields = [
        "state",
        "state_reason",
        "desired_state",
        "port",
        "pid",
        "restarts",
        "generation",
        "last_exit_code",
        "last_error",
        "log_tail",
        "started_at",
        "ready_at",
        "stopped_at",
    ]
    actions = ["restart", "drain"]

    @admin.action(description="Restart: the node agent replaces their engines")
    def restart(self, request: HttpRequest, queryset: Any) -> None:
        run_for_each(request, queryset, services.restart_worker, "Restarts requested")

    @admin.action(description="Drain: stop them once their requests finish")
    def drain(self, request: HttpRequest, queryset: Any) -> None:
        run_for_each(request, queryset, services.drain_worker, "Drains requested")


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
