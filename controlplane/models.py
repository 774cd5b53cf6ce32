from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q


class UsageStatus(models.TextChoices):
    OK = "ok", "OK"
    CLIENT_ERROR = "client_error", "Client error"
    ENGINE_ERROR = "engine_error", "Engine error"
    CLIENT_DISCONNECTED = "client_disconnected", "Client disconnected"


class UsageRecord(models.Model):
    """One metered inference request. Written by the gateway's metering, idempotent on
    request_id, so a retried flush can never count a request twice."""

    request_id = models.CharField(max_length=64, unique=True)
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="usage")
    api_key = models.ForeignKey(
        "tenants.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="usage"
    )
    model = models.ForeignKey(
        "models_registry.Model",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="usage",
    )
    model_version = models.ForeignKey(
        "models_registry.ModelVersion",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="usage",
    )
    worker = models.ForeignKey(
        "nodes.Worker", on_delete=models.SET_NULL, null=True, blank=True, related_name="usage"
    )
    endpoint = models.CharField(
        max_length=32, help_text="chat.completions, completions or embeddings"
    )
    streamed = models.BooleanField(default=False)
    prompt_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    # Completion tokens the client actually received; differs from completion_tokens (what the
    # engine generated, and what is billed) only when the client disconnected mid-stream.
    sent_completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    # True when the engine's own usage never arrived and the gateway counted streamed chunks.
    usage_counted = models.BooleanField(default=False)
    latency_ms = models.PositiveIntegerField(default=0)
    time_to_first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=32, choices=UsageStatus.choices, default=UsageStatus.OK)
    http_status = models.PositiveSmallIntegerField(default=200)
    cost = models.DecimalField(max_digits=20, decimal_places=10, default=Decimal(0))
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["tenant", "created_at"]),
            models.Index(fields=["model", "created_at"]),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(cost__gte=0), name="usage_cost_not_negative"),
            models.CheckConstraint(
                condition=Q(cached_tokens__lte=models.F("prompt_tokens")),
                name="usage_cached_within_prompt",
            ),
        ]

    def __str__(self) -> str:
        return self.request_id

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class AuditVia(models.TextChoices):
    """The face a change came through. One value per face, so that the trail tells them apart."""

    API = "api", "REST API"
    DASHBOARD = "dashboard", "Dashboard"
    ADMIN = "admin", "Django admin"
    CLI = "cli", "Command line"
    SYSTEM = "system", "System"


class AuditEvent(models.Model):
    """Who changed what, and when, through which face (see controlplane/audit.py)."""

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_repr = models.CharField(max_length=200, help_text="The actor as it was at the time.")
    via = models.CharField(max_length=16, choices=AuditVia.choices)
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=300, blank=True)
    tenant = models.ForeignKey(
        "tenants.Tenant",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="audit_events",
    )
    changes = models.JSONField(default=dict, blank=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.actor_repr} {self.action} {self.object_type} {self.object_repr}"
