from __future__ import annotations

from django.contrib import admin

from controlplane.admin_base import ReadOnlyAdmin
from controlplane.models import AuditEvent, UsageRecord
from controlplane.signin import AdminSignInForm

# The admin's password sign-in counts failures like the dashboard's (controlplane/signin.py).
admin.site.login_form = AdminSignInForm


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "request_id",
        "tenant",
        "model",
        "endpoint",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "created_at",
    ]
    list_filter = ["status", "endpoint", "streamed", "tenant", "model"]
    search_fields = ["request_id"]
    date_hierarchy = "created_at"
    list_select_related = ["tenant", "model"]


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor_repr", "via", "action", "object_type", "object_repr"]
    list_filter = ["via", "action", "object_type", "tenant"]
    search_fields = ["actor_repr", "object_repr", "object_id"]
    date_hierarchy = "created_at"
