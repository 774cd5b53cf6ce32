"""The audit log: who changed what, through which face, filtered and paged."""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from controlplane.models import AuditEvent, AuditVia
from dashboard.access import actor, member_view, own_tenant_id, respond

AUDIT_PAGE_SIZE = 50


@require_GET
@member_view
def audit_log(request: HttpRequest) -> HttpResponse:
    who = actor(request)
    events = AuditEvent.objects.select_related("tenant").order_by("-created_at", "-id")
    if not who.is_platform_admin:
        events = events.filter(tenant_id=own_tenant_id(who))
    query = request.GET.get("q", "").strip()
    via = request.GET.get("via", "")
    if query:
        events = events.filter(
            Q(actor_repr__icontains=query)
            | Q(object_repr__icontains=query)
            | Q(object_type__icontains=query)
            | Q(action__icontains=query)
        )
    if via in AuditVia.values:
        events = events.filter(via=via)
    page = Paginator(events, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    for event in page.object_list:
        event.change_lines = describe_changes(event.changes)  # type: ignore[attr-defined]
    context = {
        "page": page,
        "query": query,
        "via": via,
        "via_choices": AuditEvent._meta.get_field("via").choices,
    }
    return respond(request, "dashboard/audit.html", "htmx/audit_results.html", context)


def describe_changes(changes: Any) -> list[tuple[str, str]]:
    """{"replicas": [3, 4]} reads as ("replicas", "3 → 4"); a lone value as itself."""
    if not isinstance(changes, dict):
        return [("", str(changes))]
    lines = []
    for field, change in changes.items():
        if isinstance(change, list) and len(change) == 2:
            old, new = ("—" if v in (None, "") else v for v in change)
            lines.append((field, f"{old} → {new}"))
        else:
            lines.append((field, "—" if change in (None, "") else str(change)))
    return lines
