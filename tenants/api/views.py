from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from controlplane.api.permissions import HasRole, TenantAdminsWrite, TenantMembersRead
from controlplane.api.viewsets import AuditedModelViewSet, snapshot
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
        serializer.save(created_by=self.request.user)
        obj = serializer.instance
        assert obj is not None
        self.audit("create", obj, snapshot(obj))

    @extend_schema(responses={201: serializers.ApiKeyCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():
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
        with transaction.atomic():
            if key.revoked_at is None:
                key.revoke()
                self.audit("revoke", key, {"revoked_at": key.revoked_at})
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
        if not key.is_usable():
            return Response(
                {"detail": f"This key is {key.status}: create a new key instead of rotating it."},
                status=status.HTTP_400_BAD_REQUEST,
            )
        successor_id = ApiKey.objects.filter(rotated_from=key).values_list("pk", flat=True).first()
        if successor_id is not None:
            return Response(
                {"detail": f"This key was already rotated to key {successor_id}: rotate that one."},
                status=status.HTTP_400_BAD_REQUEST,
            )
        with transaction.atomic():
            successor, plaintext = key.rotate(grace=params.grace, created_by=request.user)
            self.audit(
                "rotate",
                key,
                {
                    "rotated_to": successor.pk,
                    "grace_seconds": params.validated_data["grace_seconds"],
                    "expires_at": key.expires_at,
                },
            )
            self.audit("create", successor, snapshot(successor))
        successor._plaintext = plaintext
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
        serializer.save(user=self.request.user)
        obj = serializer.instance
        assert obj is not None
        self.audit("create", obj, snapshot(obj))

    @extend_schema(responses={201: serializers.ApiTokenCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():
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
        with transaction.atomic():
            if token.revoked_at is None:
                token.revoked_at = timezone.now()
                token.save(update_fields=["revoked_at"])
                self.audit("revoke", token, {"revoked_at": token.revoked_at})
        return Response(self.get_serializer(token).data)


class QuotaViewSet(AuditedModelViewSet):
    """Limits per tenant, key and model. Tenant members read theirs; platform admins write."""

    queryset = Quota.objects.select_related("tenant", "api_key", "model").all()
    serializer_class = serializers.QuotaSerializer
    filterset_class = filters.QuotaFilter
    permission_classes = [TenantMembersRead]
    tenant_scoped = True
    ordering_fields = ["created_at", "updated_at", "id"]
