from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from controlplane.api.permissions import HasRole, TenantAdminsWrite, TenantMembersRead
from controlplane.api.viewsets import AuditedModelViewSet
from tenants import services
from tenants.api import filters, serializers
from tenants.api import schema as _schema  # noqa: F401 - registers the token scheme for OpenAPI
from tenants.models import ApiKey, ApiToken, Quota, Tenant


class TenantViewSet(AuditedModelViewSet):
    """Tenants. Tenant members read their own; only platform admins create or change them."""

    queryset = Tenant.objects.all()
    serializer_class = serializers.TenantSerializer
    filterset_class = filters.TenantFilter
    permission_classes = [TenantMembersRead]
    tenant_scoped = True
    tenant_lookup = "pk"
    search_fields = ["slug", "name"]
    ordering_fields = ["slug", "name", "created_at"]


class UserViewSet(AuditedModelViewSet):
    """Users and their roles. Platform admins create them; tenant members see their tenant's."""

    queryset = get_user_model().objects.select_related("membership__tenant").order_by("username")
    serializer_class = serializers.UserSerializer
    filterset_class = filters.UserFilter
    permission_classes = [TenantMembersRead]
    tenant_scoped = True
    tenant_lookup = "membership__tenant"
    search_fields = ["username", "email", "first_name", "last_name"]
    ordering_fields = ["username", "date_joined", "last_login"]

    def perform_destroy(self, instance: Any) -> None:
        if instance.pk == self.request.user.pk:
            raise ValidationError({"detail": "You cannot delete your own user."})
        super().perform_destroy(instance)


class ApiKeyViewSet(AuditedModelViewSet):
    """Inference API keys. The plaintext is in the creation (and rotation) response only.

    Keys are revoked, not deleted, so that usage stays attributed to them.
    """

    queryset = (
        ApiKey.objects.select_related("tenant", "created_by")
        .prefetch_related("allowed_models")
        .all()
    )
    serializer_class = serializers.ApiKeySerializer
    filterset_class = filters.ApiKeyFilter
    permission_classes = [TenantAdminsWrite]
    tenant_scoped = True
    http_method_names = ["get", "post", "put", "patch", "head", "options"]
    search_fields = ["name", "prefix"]
    ordering_fields = ["name", "created_at", "expires_at", "last_used_at"]

    def perform_create(self, serializer: BaseSerializer[Any]) -> None:
        data = dict(serializer.validated_data)
        allowed = data.pop("allowed_models", [])
        key = ApiKey(**data)
        plaintext = services.issue_key(key, allowed_models=allowed, origin=self.origin)
        # Handed to the creation response once; never stored.
        key._plaintext = plaintext  # type: ignore[attr-defined]
        serializer.instance = key

    def perform_update(self, serializer: BaseSerializer[Any]) -> None:
        data = dict(serializer.validated_data)
        allowed = data.pop("allowed_models", None)
        data.pop("tenant", None)  # unchanged: the model refuses a move
        assert serializer.instance is not None
        serializer.instance = services.update_key(
            serializer.instance, fields=data, allowed_models=allowed, origin=self.origin
        )

    @extend_schema(responses={201: serializers.ApiKeyCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        self.perform_create(serializer)
        created = serializers.ApiKeyCreatedSerializer(
            serializer.instance, context=self.get_serializer_context()
        )
        return Response(created.data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: serializers.ApiKeySerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        """Revoke the key now. Revoking a revoked key changes nothing."""
        key = self.get_object()
        services.revoke_key(key, origin=self.origin)
        return Response(self.get_serializer(key).data)

    @extend_schema(
        request=serializers.RotateSerializer,
        responses={201: serializers.ApiKeyCreatedSerializer},
    )
    @action(detail=True, methods=["post"])
    def rotate(self, request: Request, pk: str | None = None) -> Response:
        """Issue a successor key; this key keeps working for `grace_seconds` more."""
        key = self.get_object()
        params = serializers.RotateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        successor, plaintext = services.rotate_key(key, grace=params.grace, origin=self.origin)
        successor._plaintext = plaintext  # type: ignore[attr-defined]
        created = serializers.ApiKeyCreatedSerializer(
            successor, context=self.get_serializer_context()
        )
        return Response(created.data, status=status.HTTP_201_CREATED)


class ApiTokenViewSet(AuditedModelViewSet):
    """Your own provisioning-API tokens; a token acts as you, with your role."""

    queryset = ApiToken.objects.all()
    serializer_class = serializers.ApiTokenSerializer
    filterset_class = filters.ApiTokenFilter
    permission_classes = [HasRole]
    http_method_names = ["get", "post", "head", "options"]
    search_fields = ["name", "prefix"]
    ordering_fields = ["name", "created_at", "expires_at", "last_used_at"]

    def get_queryset(self) -> QuerySet[ApiToken]:
        # Everyone, platform admins included, sees only their own tokens.
        return ApiToken.objects.filter(user_id=self.request.user.pk)

    def perform_create(self, serializer: BaseSerializer[Any]) -> None:
        token = ApiToken(user=self.request.user, **serializer.validated_data)
        plaintext = services.issue_token(token, origin=self.origin)
        token._plaintext = plaintext  # type: ignore[attr-defined]
        serializer.instance = token

    @extend_schema(responses={201: serializers.ApiTokenCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        self.perform_create(serializer)
        created = serializers.ApiTokenCreatedSerializer(
            serializer.instance, context=self.get_serializer_context()
        )
        return Response(created.data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: serializers.ApiTokenSerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        """Revoke the token now; requests made with it are refused from then on."""
        token = self.get_object()
        services.revoke_token(token, origin=self.origin)
        return Response(self.get_serializer(token).data)


class QuotaViewSet(AuditedModelViewSet):
    """Limits per tenant, key and model. Tenant members read theirs; platform admins write."""

    queryset = Quota.objects.select_related("tenant", "api_key", "model").all()
    serializer_class = serializers.QuotaSerializer
    filterset_class = filters.QuotaFilter
    permission_classes = [TenantMembersRead]
    tenant_scoped = True
    ordering_fields = ["created_at", "updated_at", "id"]
