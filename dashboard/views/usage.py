"""Usage and cost over time, and its CSV export."""

from __future__ import annotations

import csv
from typing import Any

from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from controlplane.models import UsageRecord
from dashboard import figures
from dashboard.access import (
    actor,
    member_view,
    own_tenant_id,
    respond,
    visible_tenants,
)
from dashboard.forms import UsageFilterForm
from models_registry.models import Model

# The table shows this many rows; the CSV has them all.
TABLE_ROWS = 500


def visible_usage(request: HttpRequest) -> QuerySet[UsageRecord]:
    who = actor(request)
    if who.is_platform_admin:
        return UsageRecord.objects.all()
    return UsageRecord.objects.filter(tenant_id=own_tenant_id(who))


def filter_models(request: HttpRequest) -> QuerySet[Model]:
    """The models a member may filter by: its tenant's granted ones and the ones in its usage.

    Not every model: the choices would name models that only other tenants are granted.
    """
    who = actor(request)
    models = Model.objects.order_by("name")
    if who.is_platform_admin:
        return models
    tenant_id = own_tenant_id(who)
    return models.filter(Q(grants__tenant_id=tenant_id) | Q(usage__tenant_id=tenant_id)).distinct()


def report_for(request: HttpRequest, form: UsageFilterForm) -> figures.UsageReport:
    data = form.cleaned_data
    usage = figures.filtered_usage(
        visible_usage(request),
        start=data["start"],
        end=data["end"],
        tenant=data.get("tenant"),
        model=data.get("model"),
    )
    return figures.usage_report(usage, start=data["start"], end=data["end"])


@require_GET
@member_view
def usage(request: HttpRequest) -> HttpResponse:
    # No filters yet: the default range, filled in, so the form shows what the page shows.
    form = UsageFilterForm(
        request.GET or UsageFilterForm.default_range(),
        tenants=visible_tenants(actor(request)),
        models=filter_models(request),
    )
    if not form.is_valid():
        return respond(
            request, "dashboard/usage.html", "htmx/usage_results.html", {"form": form}, 422
        )
    report = report_for(request, form)
    context: dict[str, Any] = {
        "form": form,
        "report": report,
        # Newest first in the table; the charts and the CSV run forward in time.
        "table_rows": report.rows[::-1][:TABLE_ROWS],
        "truncated": len(report.rows) > TABLE_ROWS,
        "query": request.GET.urlencode(),
        "filters": form.cleaned_data,
    }
    return respond(request, "dashboard/usage.html", "htmx/usage_results.html", context)


@require_GET
@member_view
def usage_csv(request: HttpRequest) -> HttpResponse:
    form = UsageFilterForm(
        request.GET, tenants=visible_tenants(actor(request)), models=filter_models(request)
    )
    if not form.is_valid():
        errors = "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in form.errors.items())
        return HttpResponse(f"Bad filters: {errors}\n", status=400, content_type="text/plain")
    report = report_for(request, form)
    start, end = form.cleaned_data["start"], form.cleaned_data["end"]
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="usage-{start}-{end}.csv"'
    writer = csv.writer(response)
    writer.writerow(figures.CSV_HEADER)
    writer.writerows(figures.csv_rows(report))
    return response
