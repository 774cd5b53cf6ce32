from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from tenants import keys
from tenants.scopes import QuotaScope, scope_of


class PriorityClass(models.TextChoices):
    HIGH = "high", "High"
    NORMAL = "normal", "Normal"
    LOW = "low", "Low"


# vLLM's priority scheduler serves lower numbers first.
ENGINE_PRIORITY = {PriorityClass.HIGH: 0, PriorityClass.NORMAL: 10, PriorityClass.LOW: 20}

slug_validator = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$",
    "Use 1-63 lowercase letters, digits and hyphens, not starting or ending with a hyphen.",
)


class Tenant(models.Model):
    slug = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200)
    active = models.BooleanField(default=True)
    priority_class = models.CharField(
        max_length=16, choices=PriorityClass.choices, default=PriorityClass.NORMAL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(
                condition=Q(priority_class__in=PriorityClass.values), name="tenant_priority_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def engine_priority(self) -> int:
        return ENGINE_PRIORITY[PriorityClass(self.priority_class)]


class Role(models.TextChoices):
    PLATFORM_ADMIN = "platform_admin", "Platform admin"
    TENANT_ADMIN = "tenant_admin", "Tenant admin"
    TENANT_VIEWER = "tenant_viewer", "Tenant viewer"


class Membership(models.Model):
    """A user's role. Platform admins belong to no tenant; everyone else to exactly one."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership"
    )
    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, null=True, blank=True, related_name="memberships"
    )
    role = models.CharField(max_length=32, choices=Role.choices)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(role=Role.PLATFORM_ADMIN) & Q(tenant__isnull=True))
                | (Q(role__in=[Role.TENANT_ADMIN, Role.TENANT_VIEWER]) & Q(tenant__isnull=False)),
                name="membership_role_matches_tenant",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}{'@' + str(self.tenant) if self.tenant_id else ''})"


class SecretQuerySet(models.QuerySet["ApiKey"]):
    def usable(self, now: datetime | None = None) -> SecretQuerySet:
        now = now or timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        )


class ApiKey(models.Model):
    """A product's key for the inference endpoint. The plaintext exists only in the creation
    response; the database keeps a readable prefix and an HMAC of the whole key."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=32, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    # Empty means every model the tenant is granted.
    allowed_models = models.ManyToManyField(
        "models_registry.Model", blank=True, related_name="api_keys"
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    rotated_from = models.OneToOneField(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="rotated_to"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = SecretQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"],
                name="apikey_name_unique_per_tenant",
                condition=Q(revoked_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    @classmethod
    def issue(
        cls, *, tenant: Tenant, name: str, created_by: Any = None, **fields: object
    ) -> tuple[ApiKey, str]:
        """Create a key and return it with its plaintext, which is never stored."""
        secret = keys.generate(keys.API_KEY_MARKER)
        key = cls.objects.create(
            tenant=tenant,
            name=name,
            prefix=secret.prefix,
            hashed_key=secret.hashed,
            created_by=created_by,
            **fields,
        )
        return key, secret.plaintext

    @classmethod
    def authenticate(cls, plaintext: str) -> ApiKey | None:
        if not keys.looks_like(plaintext, keys.API_KEY_MARKER):
            return None
        prefix = keys.prefix_of(plaintext, keys.API_KEY_MARKER)
        key = cls.objects.select_related("tenant").filter(prefix=prefix).first()
        if key is None or not keys.matches(plaintext, key.hashed_key) or not key.is_usable():
            return None
        return key

    def is_usable(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return False
        if self.expires_at is not None and self.expires_at <= now:
            return False
        return self.tenant.active

    @property
    def status(self) -> str:
        now = timezone.now()
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])

    def rotate(self, *, grace: timedelta, created_by: Any = None) -> tuple[ApiKey, str]:
        """Issue a successor with the same grants; this key keeps working for ``grace``."""
        successor, plaintext = ApiKey.issue(
            tenant=self.tenant,
            name=f"{self.name} (rotated {timezone.now():%Y-%m-%d %H:%M})",
            created_by=created_by,
            expires_at=self.expires_at,
            rotated_from=self,
        )
        successor.allowed_models.set(self.allowed_models.all())
        deadline = timezone.now() + grace
        if self.expires_at is None or self.expires_at > deadline:
            self.expires_at = deadline
            self.save(update_fields=["expires_at"])
        return successor, plaintext


class ApiToken(models.Model):
    """A token for the provisioning API, acting as its user (and so with the user's role)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=32, unique=True, editable=False)
    hashed_token = models.CharField(max_length=64, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    @classmethod
    def issue(
        cls, *, user: Any, name: str, expires_at: datetime | None = None
    ) -> tuple[ApiToken, str]:
        secret = keys.generate(keys.API_TOKEN_MARKER)
        token = cls.objects.create(
            user=user,
            name=name,
            prefix=secret.prefix,
            hashed_token=secret.hashed,
            expires_at=expires_at,
        )
        return token, secret.plaintext

    @classmethod
    def authenticate(cls, plaintext: str) -> ApiToken | None:
        if not keys.looks_like(plaintext, keys.API_TOKEN_MARKER):
            return None
        prefix = keys.prefix_of(plaintext, keys.API_TOKEN_MARKER)
        token = cls.objects.select_related("user").filter(prefix=prefix).first()
        if token is None or not keys.matches(plaintext, token.hashed_token):
            return None
        now = timezone.now()
        if token.revoked_at is not None or (token.expires_at and token.expires_at <= now):
            return None
        if not token.user.is_active:
            return None
        return token


class Quota(models.Model):
    """Limits for a tenant, optionally narrowed to one key and/or one model.

    Every limit is optional (empty means no limit at this level); a request must pass every
    quota that applies to it: the tenant-wide one, its key's, its model's and its key-and-model one.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="quotas")
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.CASCADE, null=True, blank=True, related_name="quotas"
    )
    model = models.ForeignKey(
        "models_registry.Model",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="quotas",
    )
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveBigIntegerField(null=True, blank=True)
    concurrent_requests = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True)
    tokens_per_month = models.PositiveBigIntegerField(null=True, blank=True)
    cost_per_day = models.DecimalField(
        max_digits=14,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="USD",
    )
    cost_per_month = models.DecimalField(
        max_digits=14,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="USD",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    LIMIT_FIELDS = (
        "requests_per_minute",
        "tokens_per_minute",
        "concurrent_requests",
        "tokens_per_day",
        "tokens_per_month",
        "cost_per_day",
        "cost_per_month",
    )

    class Meta:
        ordering = ["tenant__slug", "id"]
        # One quota per scope. NULLs are distinct in unique indexes, so each shape of scope gets
        # its own partial index.
        constraints = [
            models.UniqueConstraint(
                fields=["tenant"],
                condition=Q(api_key__isnull=True, model__isnull=True),
                name="quota_unique_tenant_scope",
            ),
            models.UniqueConstraint(
                fields=["tenant", "api_key"],
                condition=Q(api_key__isnull=False, model__isnull=True),
                name="quota_unique_key_scope",
            ),
            models.UniqueConstraint(
                fields=["tenant", "model"],
                condition=Q(api_key__isnull=True, model__isnull=False),
                name="quota_unique_model_scope",
            ),
            models.UniqueConstraint(
                fields=["tenant", "api_key", "model"],
                condition=Q(api_key__isnull=False, model__isnull=False),
                name="quota_unique_key_model_scope",
            ),
            models.CheckConstraint(
                condition=(Q(cost_per_day__isnull=True) | Q(cost_per_day__gte=0))
                & (Q(cost_per_month__isnull=True) | Q(cost_per_month__gte=0)),
                name="quota_costs_not_negative",
            ),
        ]

    def __str__(self) -> str:
        scope = [str(self.tenant)]
        if self.api_key_id:
            scope.append(f"key {self.api_key_id}")
        if self.model_id:
            scope.append(f"model {self.model_id}")
        return "quota " + " / ".join(scope)

    @property
    def scope(self) -> QuotaScope:
        return scope_of(self.api_key_id, self.model_id)
