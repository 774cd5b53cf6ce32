"""Tenants, their keys, quotas and granted models.

The views check access, bind forms and answer; the rules are the models' (run by the forms),
and every write beyond a save is a call to tenants/services.py or models_registry/services.py
with `origin(request)`, so it is the same change, with the same audit event, as on the API.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, OuterRef, Q, Subquery, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from controlplane.audit import state_of
from controlplane.models import UsageRecord
from dashboard import figures
from dashboard.access import (
    actor,
    is_partial,
    member_view,
    origin,
    platform_admin_view,
    refused,
    require_platform_admin,
    require_write,
    respond,
    tenant_or_404,
    visible_tenants,
)
from dashboard.forms import (
    ApiKeyForm,
    GrantForm,
    QuotaForm,
    RotateForm,
    TenantForm,
    TenantSettingsForm,
)
from models_registry import services as registry
from models_registry.models import ModelGrant
from tenants import services
from tenants.models import ApiKey, KeyStatus, Quota, Tenant, key_status_q

PAGE_SIZE = 25


def redirect_after_save(request: HttpRequest, url: str) -> HttpResponse:
    """htmx follows HX-Redirect; a plain form post follows a 302."""
    return HttpResponseClientRedirect(url) if is_partial(request) else redirect(url)


@require_http_methods(["GET", "POST"])
@member_view
def tenant_list(request: HttpRequest) -> HttpResponse:
    """GET lists (searchable, paginated); POST creates (platform admins)."""
    if request.method == "POST":
        return tenant_create(request)
    who = actor(request)
    query = request.GET.get("q", "").strip()
    tenants = visible_tenants(who).annotate(
        active_keys=Count(
            "api_keys", filter=key_status_q(KeyStatus.ACTIVE, prefix="api_keys__"), distinct=True
        ),
        granted=Count("grants", distinct=True),
        # A subquery, not a join: joining usage would multiply the counts above.
        cost_today=Subquery(
            UsageRecord.objects.filter(
                tenant=OuterRef("pk"), created_at__gte=figures.start_of_today()
            )
            .values("tenant")
            .annotate(total=Sum("cost"))
            .values("total")
        ),
    )
    if query:
        tenants = tenants.filter(Q(slug__icontains=query) | Q(name__icontains=query))
    page = Paginator(tenants.order_by("slug"), PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "query": query,
        "form": TenantForm() if who.is_platform_admin else None,
    }
    return respond(request, "dashboard/tenants.html", "htmx/tenant_results.html", context)


@platform_admin_view
def tenant_create(request: HttpRequest) -> HttpResponse:
    form = TenantForm(request.POST)
    if not form.is_valid():
        return respond(
            request, "dashboard/tenant_new.html", "htmx/tenant_form.html", {"form": form}, 422
        )
    with transaction.atomic():
        tenant = form.save()
        origin(request).created(tenant)
    return redirect_after_save(request, reverse("dashboard:tenant", args=[tenant.slug]))


def tenant_context(request: HttpRequest, tenant: Tenant, **overrides: Any) -> dict[str, Any]:
    """Everything the tenant page shows; the sections' forms can be replaced by bound ones."""
    who = actor(request)
    keys = list(
        ApiKey.objects.filter(tenant=tenant)
        .select_related("created_by", "rotated_from")
        .prefetch_related("allowed_models")
    )
    quotas = list(
        Quota.objects.filter(tenant=tenant).select_related("api_key", "model").order_by("id")
    )
    grants = list(ModelGrant.objects.filter(tenant=tenant).select_related("model"))
    usage = UsageRecord.objects.filter(tenant=tenant)
    context: dict[str, Any] = {
        "tenant": tenant,
        "can_write": who.can_write_tenant,
        "is_platform_admin": who.is_platform_admin,
        "keys": keys,
        "quotas": quotas,
        "grants": grants,
        "traffic": figures.traffic(usage),
        "key_form": ApiKeyForm(tenant=tenant),
        "rotate_form": RotateForm(),
        "quota_form": QuotaForm(tenant=tenant),
        "grant_form": GrantForm(tenant=tenant),
        "settings_form": TenantSettingsForm(instance=tenant),
        "new_key": None,
    }
    context.update(overrides)
    return context


@require_GET
@member_view
def tenant_detail(request: HttpRequest, slug: str) -> HttpResponse:
    tenant = tenant_or_404(actor(request), slug)
    return render(request, "dashboard/tenant.html", tenant_context(request, tenant))


@require_POST
@member_view
def tenant_update(request: HttpRequest, slug: str) -> HttpResponse:
    # Looked up first: another tenant's page is 404 for everyone but platform admins, as on
    # the REST API; only then is one's own tenant's settings page refused (403) to members.
    who = actor(request)
    tenant = tenant_or_404(who, slug)
    require_platform_admin(who)
    before = state_of(tenant)
    form = TenantSettingsForm(request.POST, instance=tenant)
    if not form.is_valid():
        context = tenant_context(request, tenant, settings_form=form)
        return respond(request, "dashboard/tenant.html", "htmx/tenant_settings.html", context, 422)
    with transaction.atomic():
        form.save()
        origin(request).updated(tenant, before)
    return redirect_after_save(request, reverse("dashboard:tenant", args=[tenant.slug]))


def keys_response(
    request: HttpRequest, tenant: Tenant, status: int = 200, **overrides: Any
) -> HttpResponse:
    context = tenant_context(request, tenant, **overrides)
    response = respond(request, "dashboard/tenant.html", "htmx/tenant_keys.html", context, status)
    # The answer may carry a key's plaintext: no cache, no history entry may keep it.
    add_never_cache_headers(response)
    return response


@require_POST
@member_view
def key_create(request: HttpRequest, slug: str) -> HttpResponse:
    who = actor(request)
    tenant = tenant_or_404(who, slug)
    require_write(who)
    form = ApiKeyForm(request.POST, tenant=tenant)
    if form.is_valid():
        try:
            plaintext = services.issue_key(
                form.instance,
                allowed_models=form.cleaned_data["allowed_models"],
                origin=origin(request),
            )
        except ValidationError as exc:  # a key of the same name issued in the meantime
            refused(form, exc)
    if not form.is_valid():
        return keys_response(request, tenant, 422, key_form=form)
    return keys_response(request, tenant, new_key={"key": form.instance, "plaintext": plaintext})


def tenant_key(request: HttpRequest, slug: str, key_id: int) -> tuple[Tenant, ApiKey]:
    # Objects first, role second (here and below): another tenant's object is 404 for every
    # role, as for an id that does not exist; only one's own can be 403.
    who = actor(request)
    tenant = tenant_or_404(who, slug)
    key = get_object_or_404(ApiKey, tenant=tenant, pk=key_id)
    require_write(who)
    return tenant, key


@require_POST
@member_view
def key_revoke(request: HttpRequest, slug: str, key_id: int) -> HttpResponse:
    tenant, key = tenant_key(request, slug, key_id)
    services.revoke_key(key, origin=origin(request))
    return keys_response(request, tenant)


@require_POST
@member_view
def key_rotate(request: HttpRequest, slug: str, key_id: int) -> HttpResponse:
    tenant, key = tenant_key(request, slug, key_id)
    form = RotateForm(request.POST)
    if form.is_valid():
        try:
            successor, plaintext = services.rotate_key(
                key, grace=form.grace_period(), origin=origin(request)
            )
        except ValidationError as exc:
            refused(form, exc)
    if not form.is_valid():
        return keys_response(request, tenant, 422, rotate_form=form)
    return keys_response(request, tenant, new_key={"key": successor, "plaintext": plaintext})


def quotas_response(
    request: HttpRequest, tenant: Tenant, status: int = 200, **overrides: Any
) -> HttpResponse:
    context = tenant_context(request, tenant, **overrides)
    return respond(request, "dashboard/tenant.html", "htmx/tenant_quotas.html", context, status)


@require_POST
@member_view
def quota_create(request: HttpRequest, slug: str) -> HttpResponse:
    who = actor(request)
    tenant = tenant_or_404(who, slug)
    # Quotas are the platform's limits on a tenant: its own admin reads them, cannot lift them.
    require_platform_admin(who)
    form = QuotaForm(request.POST, tenant=tenant)
    if not form.is_valid():
        return quotas_response(request, tenant, 422, quota_form=form)
    with transaction.atomic():
        quota = form.save()
        origin(request).created(quota)
    return quotas_response(request, tenant)


@require_http_methods(["GET", "POST"])
@member_view
def quota_edit(request: HttpRequest, slug: str, quota_id: int) -> HttpResponse:
    """Inline editing: htmx swaps one quota card between its view and its form."""
    who = actor(request)
    tenant = tenant_or_404(who, slug)
    quota = get_object_or_404(
        Quota.objects.select_related("api_key", "model"), tenant=tenant, pk=quota_id
    )
    # Quotas are the platform's limits on a tenant: its own admin reads them, cannot lift them.
    require_platform_admin(who)
    if request.method == "GET":
        form = QuotaForm(instance=quota, tenant=tenant)
        context = {"tenant": tenant, "quota": quota, "form": form, "is_platform_admin": True}
        return respond(request, "dashboard/quota_edit.html", "htmx/quota_card.html", context)
    before = state_of(quota)
    form = QuotaForm(request.POST, instance=quota, tenant=tenant)
    if not form.is_valid():
        context = {"tenant": tenant, "quota": quota, "form": form, "is_platform_admin": True}
        return respond(request, "dashboard/quota_edit.html", "htmx/quota_card.html", context, 422)
    with transaction.atomic():
        quota = form.save()
        origin(request).updated(quota, before)
    if not is_partial(request):
        return redirect(reverse("dashboard:tenant", args=[tenant.slug]) + "#quotas")
    quota = Quota.objects.select_related("api_key", "model").get(pk=quota.pk)
    return render(
        request,
        "htmx/quota_card.html",
        {"tenant": tenant, "quota": quota, "is_platform_admin": True},
    )


@require_GET
@member_view
def quota_card(request: HttpRequest, slug: str, quota_id: int) -> HttpResponse:
    """The read-only card, for "Cancel" on an inline edit."""
    who = actor(request)
    tenant = tenant_or_404(who, slug)
    quota = get_object_or_404(
        Quota.objects.select_related("api_key", "model"), tenant=tenant, pk=quota_id
    )
    context = {"tenant": tenant, "quota": quota, "is_platform_admin": who.is_platform_admin}
    if not is_partial(request):
        return redirect(reverse("dashboard:tenant", args=[tenant.slug]) + "#quotas")
    return render(request, "htmx/quota_card.html", context)


@require_POST
@member_view
def quota_delete(request: HttpRequest, slug: str, quota_id: int) -> HttpResponse:
    who = actor(request)
    tenant = tenant_or_404(who, slug)
    quota = get_object_or_404(Quota, tenant=tenant, pk=quota_id)
    # Quotas are the platform's limits on a tenant: its own admin reads them, cannot lift them.
    require_platform_admin(who)
    with transaction.atomic():
        origin(request).deleted(quota)
        quota.delete()
    return quotas_response(request, tenant)


def grants_response(
    request: HttpRequest, tenant: Tenant, status: int = 200, **overrides: Any
) -> HttpResponse:
    context = tenant_context(request, tenant, **overrides)
    return respond(request, "dashboard/tenant.html", "htmx/tenant_grants.html", context, status)


@require_POST
@member_view
def grant_create(request: HttpRequest, slug: str) -> HttpResponse:
    who = actor(request)
    tenant = tenant_or_404(who, slug)  # 404 first, as in tenant_update
    require_platform_admin(who)
    form = GrantForm(request.POST, tenant=tenant)
    if not form.is_valid():
        return grants_response(request, tenant, 422, grant_form=form)
    try:
        registry.grant_model(
            ModelGrant(tenant=tenant, model=form.cleaned_data["model"]), origin=origin(request)
        )
    except ValidationError as exc:  # granted by someone else in the meantime
        refused(form, exc)
        return grants_response(request, tenant, 422, grant_form=form)
    return grants_response(request, tenant)


@require_POST
@member_view
def grant_delete(request: HttpRequest, slug: str, grant_id: int) -> HttpResponse:
    who = actor(request)
    tenant = tenant_or_404(who, slug)  # 404 first, as in tenant_update
    grant = get_object_or_404(
        ModelGrant.objects.select_related("model"), tenant=tenant, pk=grant_id
    )
    require_platform_admin(who)
    registry.ungrant_model(grant, origin=origin(request))
    return grants_response(request, tenant)
