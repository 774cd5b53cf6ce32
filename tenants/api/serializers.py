"""The tenants app's REST shapes. They hold no rule of their own: ValidatedModelSerializer runs
the model's full_clean (tenants/models.py), and writes beyond a save go through
tenants/services.py (see the views)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from controlplane.api.serializers import TenantField, ValidatedModelSerializer, default_tenant
from models_registry.models import Model
from tenants import services
from tenants.models import ApiKey, ApiToken, Membership, Quota, Role, Tenant

User = get_user_model()

DEFAULT_GRACE_SECONDS = int(services.DEFAULT_GRACE.total_seconds())
MAX_GRACE_SECONDS = int(services.MAX_GRACE.total_seconds())


class TenantSerializer(ValidatedModelSerializer[Tenant]):
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


class ApiKeySerializer(ValidatedModelSerializer[ApiKey]):
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

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # A tenant admin need not name its own tenant; the model's rules need to know it.
        attrs["tenant"] = default_tenant(self, attrs)
        return super().validate(attrs)


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


class ApiTokenSerializer(ValidatedModelSerializer[ApiToken]):
    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "expires_at", "revoked_at", "last_used_at", "created_at"]
        read_only_fields = ["prefix", "revoked_at", "last_used_at", "created_at"]


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(
        source="_plaintext",
        read_only=True,
        help_text="The token's plaintext. Shown only in this response: store it now.",
    )

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]


class QuotaSerializer(ValidatedModelSerializer[Quota]):
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
