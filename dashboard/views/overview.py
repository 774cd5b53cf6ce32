from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from controlplane.models import UsageRecord
from dashboard import figures
from dashboard.access import actor, member_view, own_tenant_id, respond
from nodes.models import Deployment, DesiredState


@member_view
def overview(request: HttpRequest) -> HttpResponse:
    """The fleet at a glance; the stats block re-fetches itself every few seconds (htmx)."""
    who = actor(request)
    context: dict[str, object] = {}
    if who.is_platform_admin:
        context["fleet"] = figures.overview()
        context["unschedulable"] = list(
            Deployment.objects.filter(desired_state=DesiredState.RUNNING)
            .exclude(unschedulable_reason="")
            .select_related("model_version__model")[:10]
        )
    else:
        context["tenant"] = who.tenant
        context["traffic"] = figures.traffic(
            UsageRecord.objects.filter(tenant_id=own_tenant_id(who))
        )
    return respond(request, "dashboard/overview.html", "htmx/overview_stats.html", context)
