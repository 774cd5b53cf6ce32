"""Tenants, their people, keys, tokens and quotas, with every rule about one of them.

A rule lives here once (controlplane/validation.py says how): constraints carry their message,
`clean()` holds the rules that read other rows, and every face (REST, dashboard, admin,
commands, tenants/services.py) runs `full_clean` before it writes.

Over 400 lines on purpose: it is the tenants app's one list of rules, and five small models
with their rules read better side by side than split across a package.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from controlplane import invalidation
from controlplane.validation import FieldConstraintsMixin, has_changed
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
                condition=Q(priority_class__in=PriorityClass.values),
                name="tenant_priority_valid",
                violation_error_message="Choose a priority class: high, normal or low.",
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
                violation_error_message=(
                    "A platform admin belongs to no tenant; a tenant admin or viewer to one."
                ),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}{'@' + str(self.tenant) if self.tenant_id else ''})"


def expiry_in_the_past(secret: ApiKey | ApiToken) -> bool:
    """A key's or token's expiry, when set or changed, must lie ahead; one that has since
    passed does not stop the secret from being renamed."""
    expires_at = secret.expires_at
    return (
        expires_at is not None
        and expires_at <= timezone.now()
        and has_changed(secret, "expires_at")
    )


class KeyStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    EXPIRED = "expired", "Expired"
    REVOKED = "revoked", "Revoked"


def key_status_q(status: KeyStatus | str, now: datetime | None = None, prefix: str = "") -> Q:
    """The keys in `status`, as a filter (`prefix` for a lookup through a relation, e.g.
    "api_keys__"). The one definition beside `ApiKey.status`, its Python twin."""
    now = now or timezone.now()
    revoked = Q(**{f"{prefix}revoked_at__isnull": False})
    expired = Q(**{f"{prefix}expires_at__lte": now})
    if status == KeyStatus.REVOKED:
        return revoked
    if status == KeyStatus.EXPIRED:
        return ~revoked & expired
    if status == KeyStatus.ACTIVE:
        return ~revoked & ~expired
    raise ValueError(f"unknown key status {status!r}")


class ApiKey(FieldConstraintsMixin, models.Model):
    """A product's key for the inference endpoint. The plaintext exists only in the creation
    response; the database keeps a readable prefix and an HMAC of the whole key.

    Rules: a name unique among the tenant's unrevoked keys (a partial unique constraint), an
    expiry in the future when set, no move to another tenant, allowed models among those the
    tenant is granted (`clean_many_to_many`). Issuing, rotating and revoking: tenants/services.py.
    """

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

    constraint_fields = {"apikey_name_unique_per_tenant": "name"}

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "name"],
                name="apikey_name_unique_per_tenant",
                condition=Q(revoked_at__isnull=True),
                violation_error_message="This tenant already has an active key with this name.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    @classmethod
    def issue(
        cls, *, tenant: Tenant, name: str, created_by: Any = None, **fields: object
    ) -> tuple[ApiKey, str]:
        """Create a key and return it with its plaintext, without rules or audit: for fixtures
        and scripts. People's faces issue keys through tenants.services.issue_key."""
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

    @property
    def status(self) -> KeyStatus:
        return self.status_at(timezone.now())

    def status_at(self, now: datetime) -> KeyStatus:
        """active, expired or revoked: `key_status_q` is the same rule as a filter."""
        if self.revoked_at is not None:
            return KeyStatus.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return KeyStatus.EXPIRED
        return KeyStatus.ACTIVE

    def is_usable(self, now: datetime | None = None) -> bool:
        """Whether the key would be let in: active, and its tenant active."""
        return self.status_at(now or timezone.now()) == KeyStatus.ACTIVE and self.tenant.active

    def revoke(self) -> bool:
        """Revoke now, once (a conditional update: two revocations race safely). Without audit:
        people's faces revoke through tenants.services.revoke_key, which records it."""
        now = timezone.now()
        done = ApiKey.objects.filter(pk=self.pk, revoked_at__isnull=True).update(revoked_at=now)
        self.refresh_from_db(fields=["revoked_at"])
        if done:
            # A queryset update sends no post_save, so controlplane.signals would not tell the
            # gateways; they must drop the key at once, not at their next reload.
            invalidation.publish("keys", self.pk, source=self._meta.label, gone=True)
        return bool(done)

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if expiry_in_the_past(self):
            errors["expires_at"] = "The expiry must be in the future."
        if not self._state.adding and self.tenant_id is not None and has_changed(self, "tenant"):
            errors["tenant"] = "A key cannot move to another tenant: issue a new key there."
        if errors:
            raise ValidationError(errors)

    def clean_many_to_many(self, values: Mapping[str, Iterable[Any]]) -> None:
        """A key narrowed to models must stay within what its tenant is granted."""
        models_ = list(values.get("allowed_models", []))
        if not models_ or self.tenant_id is None:
            return
        from models_registry.models import ModelGrant

        granted = set(
            ModelGrant.objects.filter(tenant_id=self.tenant_id).values_list("model_id", flat=True)
        )
        outside = sorted(m.name for m in models_ if m.pk not in granted)
        if outside:
            raise ValidationError(
                {
                    "allowed_models": (
                        f"Not granted to tenant {self.tenant.slug}: {', '.join(outside)}. "
                        "Grant the models first."
                    )
                }
            )


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
        """Create a token without rules or audit, for fixtures; people's faces go through
        tenants.services.issue_token."""
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

    def clean(self) -> None:
        if expiry_in_the_past(self):
            raise ValidationError({"expires_at": "The expiry must be in the future."})


SAME_SCOPE = "A quota for this scope already exists; edit that one."


class Quota(models.Model):
    """Limits for a tenant, optionally narrowed to one key and/or one model.

    Every limit is optional (empty means no limit at this level); a request must pass every
    quota that applies to it: the tenant-wide one, its key's, its model's and its key-and-model one.

    Rules: one quota per scope (the partial unique constraints), at least one limit, limits not
    negative, a key of the same tenant, a model the tenant is granted (`clean`).
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
                violation_error_message=SAME_SCOPE,
            ),
            models.UniqueConstraint(
                fields=["tenant", "api_key"],
                condition=Q(api_key__isnull=False, model__isnull=True),
                name="quota_unique_key_scope",
                violation_error_message=SAME_SCOPE,
            ),
            models.UniqueConstraint(
                fields=["tenant", "model"],
                condition=Q(api_key__isnull=True, model__isnull=False),
                name="quota_unique_model_scope",
                violation_error_message=SAME_SCOPE,
            ),
            models.UniqueConstraint(
                fields=["tenant", "api_key", "model"],
                condition=Q(api_key__isnull=False, model__isnull=False),
                name="quota_unique_key_model_scope",
                violation_error_message=SAME_SCOPE,
            ),
            models.CheckConstraint(
                condition=(Q(cost_per_day__isnull=True) | Q(cost_per_day__gte=0))
                & (Q(cost_per_month__isnull=True) | Q(cost_per_month__gte=0)),
                name="quota_costs_not_negative",
                violation_error_message="Costs cannot be negative.",
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

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if all(getattr(self, name) is None for name in self.LIMIT_FIELDS):
            errors[NON_FIELD_ERRORS] = "Set at least one limit (empty fields mean no limit)."
        tenant, key, model = (
            self.tenant if self.tenant_id else None,
            self.api_key if self.api_key_id else None,
            self.model if self.model_id else None,
        )
        if tenant is not None and key is not None and key.tenant_id != tenant.pk:
            errors["api_key"] = f"This key belongs to tenant {key.tenant.slug}, not {tenant.slug}."
        if (
            tenant is not None
            and model is not None
            and not tenant.grants.filter(model=model).exists()
        ):
            errors["model"] = f"{tenant.slug} is not granted {model.name}; grant it first."
        if errors:
            raise ValidationError(errors)
