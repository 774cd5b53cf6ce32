"""Who may see and change what in the dashboard, decided in one place.

Every view goes through `member_view` (or `platform_admin_view`): login, then a role from
`tenants.roles.actor_of`. A tenant's objects are looked up through `visible_tenants`, so
another tenant's pages are 404 (their existence is not revealed), and writes go through
`require_write`, so viewers stay read-only.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.forms import BaseForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from controlplane.audit import AuditVia, Origin
from tenants.models import Tenant
from tenants.roles import Actor, actor_of

View = Callable[..., HttpResponse]


def member_view(view: View) -> View:
    """Login required, and the user must hold a role (a user with none sees nothing)."""

    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if actor_of(request.user).role is None:
            raise PermissionDenied("Your account has no role in the control plane.")
        return view(request, *args, **kwargs)

    return wrapper


def platform_admin_view(view: View) -> View:
    """The fleet (nodes, deployments, model changes) belongs to the platform team only."""

    @member_view
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not actor_of(request.user).is_platform_admin:
            raise PermissionDenied("This page needs a platform admin.")
        return view(request, *args, **kwargs)

    return wrapper


def actor(request: HttpRequest) -> Actor:
    return actor_of(request.user)


def own_tenant_id(who: Actor) -> int:
    """The tenant of a tenant member (the membership constraint guarantees one)."""
    if who.tenant_id is None:
        raise PermissionDenied("Your account belongs to no tenant.")
    return who.tenant_id


def visible_tenants(who: Actor) -> QuerySet[Tenant]:
    if who.is_platform_admin:
        return Tenant.objects.all()
    return Tenant.objects.filter(pk=own_tenant_id(who))


def tenant_or_404(who: Actor, slug: str) -> Tenant:
    return get_object_or_404(visible_tenants(who), slug=slug)


def require_write(who: Actor) -> None:
    if not who.can_write_tenant:
        raise PermissionDenied("Your role is read-only.")


def require_platform_admin(who: Actor) -> None:
    if not who.is_platform_admin:
        raise PermissionDenied("This needs a platform admin.")


def origin(request: HttpRequest) -> Origin:
    """Who is writing, through the dashboard: handed to services and the audit log."""
    return Origin.of(request, AuditVia.DASHBOARD)


def refused(form: BaseForm, exc: ValidationError) -> None:
    """Show a service's refusal on the form: beside its field, or above the form."""
    errors = exc.message_dict if hasattr(exc, "error_dict") else {None: exc.messages}
    for field, messages in errors.items():
        form.add_error(field if field in form.fields else None, messages)


def is_partial(request: HttpRequest) -> bool:
    """An htmx request wants a fragment; a history restore or a plain visit a full page."""
    htmx = getattr(request, "htmx", None)
    if not htmx:
        return False
    return not htmx.history_restore_request


def respond(
    request: HttpRequest,
    page: str,
    partial: str,
    context: dict[str, Any],
    status: int = 200,
) -> HttpResponse:
    """One view, two answers: the fragment for htmx, the full page otherwise (no JS needed)."""
    return render(request, partial if is_partial(request) else page, context, status=status)
