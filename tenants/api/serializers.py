from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from rest_framework import serializers

from controlplane.api.serializers import TenantField, default_tenant
from models_registry.models import Model, ModelGrant
from tenants.models import ApiKey, ApiToken, Membership, Quota, Role, Tenant

User = get_user_model()

# Rotation keeps the old key working this long by default, and at most this long, so a
# forgotten rotation cannot leave a leaked key alive for months.
DEFAULT_GRACE_SECONDS = 86400
MAX_GRACE_SECONDS = 30 * 86400


class TenantSerializer(serializers.ModelSerializer[Tenant]):
    class Meta:
        model = Tenant
        fields = ["id", "slug", "name", "active", "priority_class", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]


class UserSerializer(serializers.ModelSerializer[Any]):
    """A user with its role: platform admins belong to no tenant, everyone else to one."""

    role = serializers.ChoiceField(choices=Role.choices, source="membership.role")
    tenant = serializers.PrimaryKeyRelatedField(
        queryset=Tenant.objects.all(), source="membership.tenant", allow_null=True, required=False
    )
    password = serializers.CharField(
        write_only=True,
        required=False,
        style={"input_type": "password"},
        help_text="Leave out for a user that signs in only through API tokens.",
    )

    class Meta:
        model = User
        fields = [
            "id",
            "username",
            "email",
            "first_name",
            "last_name",
            "is_active",
            "role",
            "tenant",
            "password",
            "date_joined",
            "last_login",
        ]
        read_only_fields = ["date_joined", "last_login"]

    def validate_password(self, value: str) -> str:
        try:
            validate_password(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(list(exc.messages)) from exc
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        membership = attrs.get("membership", {})
        current = getattr(self.instance, "membership", None) if self.instance else None
        role = membership.get("role", current.role if current else None)
        if "tenant" in membership:
            tenant = membership["tenant"]
        else:
            tenant = current.tenant if current else None
        if role == Role.PLATFORM_ADMIN and tenant is not None:
            raise serializers.ValidationError(
                {"tenant": "A platform admin belongs to no tenant: leave tenant empty."}
            )
        if role in (Role.TENANT_ADMIN, Role.TENANT_VIEWER) and tenant is None:
            raise serializers.ValidationError(
                {"tenant": "A tenant admin or viewer needs a tenant."}
            )
        attrs["membership"] = {"role": role, "tenant": tenant}
        return attrs

    def create(self, validated_data: dict[str, Any]) -> Any:
        membership = validated_data.pop("membership")
        password = validated_data.pop("password", None)
        user = User(**validated_data)
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.save()
        Membership.objects.create(user=user, **membership)
        return user

    def update(self, instance: Any, validated_data: dict[str, Any]) -> Any:
        membership = validated_data.pop("membership")
        password = validated_data.pop("password", None)
        for name, value in validated_data.items():
            setattr(instance, name, value)
        if password:
            instance.set_password(password)
        instance.save()
        Membership.objects.update_or_create(user=instance, defaults=membership)
        # The actor cache on the user object would otherwise keep the old role.
        instance.__dict__.pop("_controlplane_actor", None)
        return instance


class ApiKeySerializer(serializers.ModelSerializer[ApiKey]):
    """An inference key. Its plaintext is never part of this: see ApiKeyCreatedSerializer."""

    tenant = TenantField(
        required=False,
        help_text="The tenant owning the key; defaults to your own tenant for tenant admins.",
    )
    allowed_models = serializers.PrimaryKeyRelatedField(
        many=True,
        queryset=Model.objects.all(),
        required=False,
        help_text="Models this key may use; empty means every model the tenant is granted.",
    )
    status = serializers.CharField(read_only=True, help_text="active, expired or revoked")
    created_by: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "tenant",
            "name",
            "prefix",
            "allowed_models",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "status",
            "created_by",
            "rotated_from",
            "created_at",
        ]
        read_only_fields = [
            "prefix",
            "revoked_at",
            "last_used_at",
            "rotated_from",
            "created_at",
        ]
        # The name's uniqueness among active keys is checked in validate(); DRF's own
        # validator for that constraint would make `tenant` required even for tenant admins.
        validators: list[Any] = []

    def validate_expires_at(self, value: Any) -> Any:
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("Must be in the future.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if (
            self.instance is not None
            and "tenant" in attrs
            and attrs["tenant"] != self.instance.tenant
        ):
            raise serializers.ValidationError({"tenant": "A key cannot move to another tenant."})
        tenant = default_tenant(self, attrs)
        attrs["tenant"] = tenant
        name = attrs.get("name", self.instance.name if self.instance else None)
        clash = ApiKey.objects.filter(tenant=tenant, name=name, revoked_at__isnull=True)
        if self.instance is not None:
            clash = clash.exclude(pk=self.instance.pk)
        if clash.exists():
            raise serializers.ValidationError(
                {"name": "This tenant already has an active key with this name."}
            )
        models = attrs.get("allowed_models")
        if models:
            granted = set(
                ModelGrant.objects.filter(tenant=tenant).values_list("model_id", flat=True)
            )
            outside = sorted(m.name for m in models if m.pk not in granted)
            if outside:
                raise serializers.ValidationError(
                    {
                        "allowed_models": (
                            f"Not granted to tenant {tenant.slug}: {', '.join(outside)}. "
                            "Grant the models first."
                        )
                    }
                )
        return attrs

    def create(self, validated_data: dict[str, Any]) -> ApiKey:
        allowed = validated_data.pop("allowed_models", [])
        key, plaintext = ApiKey.issue(**validated_data)
        key.allowed_models.set(allowed)
        # Handed to the view once, for the creation response; never stored.
        key._plaintext = plaintext  # type: ignore[attr-defined]
        return key


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(
        source="_plaintext",
        read_only=True,
        help_text="The key's plaintext. Shown only in this response: store it now.",
    )

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]


class RotateSerializer(serializers.Serializer[Any]):
    grace_seconds = serializers.IntegerField(
        min_value=0,
        max_value=MAX_GRACE_SECONDS,
        default=DEFAULT_GRACE_SECONDS,
        help_text="How long the old key keeps working beside the new one.",
    )

    @property
    def grace(self) -> timedelta:
        return timedelta(seconds=self.validated_data["grace_seconds"])


class ApiTokenSerializer(serializers.ModelSerializer[ApiToken]):
    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "expires_at", "revoked_at", "last_used_at", "created_at"]
        read_only_fields = ["prefix", "revoked_at", "last_used_at", "created_at"]

    def validate_expires_at(self, value: Any) -> Any:
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("Must be in the future.")
        return value

    def create(self, validated_data: dict[str, Any]) -> ApiToken:
        token, plaintext = ApiToken.issue(**validated_data)
        token._plaintext = plaintext  # type: ignore[attr-defined]
        return token


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(
        source="_plaintext",
        read_only=True,
        help_text="The token's plaintext. Shown only in this response: store it now.",
    )

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]


class QuotaSerializer(serializers.ModelSerializer[Quota]):
    tenant = TenantField()

    class Meta:
        model = Quota
        fields = [
            "id",
            "tenant",
            "api_key",
            "model",
            *Quota.LIMIT_FIELDS,
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]
        # Scope uniqueness is checked in validate() with a message that says which scope.
        validators: list[Any] = []

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        def current(name: str) -> Any:
            if name in attrs:
                return attrs[name]
            return getattr(self.instance, name) if self.instance else None

        tenant, api_key, model = current("tenant"), current("api_key"), current("model")
        errors: dict[str, str] = {}
        if api_key is not None and api_key.tenant_id != tenant.pk:
            errors["api_key"] = f"This key belongs to another tenant, not {tenant.slug}."
        if model is not None and not ModelGrant.objects.filter(tenant=tenant, model=model).exists():
            errors["model"] = (
                f"Tenant {tenant.slug} is not granted model {model.name}: grant it first."
            )
        if errors:
            raise serializers.ValidationError(errors)
        same_scope = Quota.objects.filter(tenant=tenant, api_key=api_key, model=model)
        if self.instance is not None:
            same_scope = same_scope.exclude(pk=self.instance.pk)
        if same_scope.exists():
            raise serializers.ValidationError(
                {"non_field_errors": ["A quota for this tenant, key and model already exists."]}
            )
        return attrs
