from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.forms import ModelForm
from django.http import HttpRequest

from controlplane.admin_base import AuditedAdmin, origin
from tenants import services
from tenants.models import ApiKey, ApiToken, Membership, Quota, Tenant


@admin.register(Tenant)
class TenantAdmin(AuditedAdmin):
    list_display = ["slug", "name", "active", "priority_class", "created_at"]
    list_filter = ["active", "priority_class"]
    search_fields = ["slug", "name"]


@admin.register(Membership)
class MembershipAdmin(AuditedAdmin):
    list_display = ["user", "role", "tenant"]
    list_filter = ["role", "tenant"]
    search_fields = ["user__username", "user__email"]
    autocomplete_fields = ["tenant"]
    list_select_related = ["user", "tenant"]


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedAdmin):
    """Adding a key here shows its plaintext once, in the confirmation message. Keys are issued
    and revoked through tenants/services.py, as on every other face."""

    list_display = ["prefix", "name", "tenant", "status", "expires_at", "last_used_at"]
    list_filter = ["tenant", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["prefix", "name", "tenant__slug"]
    readonly_fields = [
        "prefix",
        "revoked_at",
        "last_used_at",
        "created_by",
        "rotated_from",
        "created_at",
    ]
    filter_horizontal = ["allowed_models"]
    list_select_related = ["tenant"]
    actions = ["revoke_keys"]

    def save_model(
        self, request: HttpRequest, obj: Any, form: ModelForm[Any], change: bool
    ) -> None:
        allowed = form.cleaned_data.get("allowed_models", [])
        if change:
            fields = {name: form.cleaned_data[name] for name in form.changed_data}
            fields.pop("allowed_models", None)
            services.update_key(obj, fields=fields, allowed_models=allowed, origin=origin(request))
            return
        plaintext = services.issue_key(obj, allowed_models=allowed, origin=origin(request))
        messages.warning(
            request, f"The new key is {plaintext} — copy it now: it is shown only this once."
        )

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # The service has set the key's models, after checking them against its grants.
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    @admin.action(description="Revoke the selected keys")
    def revoke_keys(self, request: HttpRequest, queryset: Any) -> None:
        for key in queryset.filter(revoked_at__isnull=True):
            services.revoke_key(key, origin=origin(request))


@admin.register(ApiToken)
class ApiTokenAdmin(AuditedAdmin):
    """Provisioning-API tokens; adding one here shows its plaintext once. Issued and revoked
    through tenants/services.py."""

    list_display = ["prefix", "name", "user", "expires_at", "revoked_at", "last_used_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["prefix", "name", "user__username"]
    fields = ["user", "name", "expires_at", "revoked_at"]
    readonly_fields = ["revoked_at"]
    list_select_related = ["user"]
    actions = ["revoke_tokens"]

    def save_model(
        self, request: HttpRequest, obj: Any, form: ModelForm[Any], change: bool
    ) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        plaintext = services.issue_token(obj, origin=origin(request))
        messages.warning(
            request, f"The new token is {plaintext} — copy it now: it is shown only this once."
        )

    @admin.action(description="Revoke the selected tokens")
    def revoke_tokens(self, request: HttpRequest, queryset: Any) -> None:
        for token in queryset.filter(revoked_at__isnull=True):
            services.revoke_token(token, origin=origin(request))


@admin.register(Quota)
class QuotaAdmin(AuditedAdmin):
    list_display = [
        "tenant",
        "api_key",
        "model",
        "requests_per_minute",
        "tokens_per_minute",
        "concurrent_requests",
        "tokens_per_day",
        "cost_per_month",
    ]
    list_filter = ["tenant", "model"]
    search_fields = ["tenant__slug", "api_key__name", "model__name"]
    list_select_related = ["tenant", "api_key", "model"]
