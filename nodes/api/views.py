from __future__ import annotations

from typing import Any

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from controlplane.api.permissions import IsPlatformAdmin
from controlplane.api.viewsets import AuditedModelViewSet
from nodes import credentials
from nodes.api import filters, serializers
from nodes.models import Deployment, Gpu, Node, Worker


class NodeViewSet(AuditedModelViewSet):
    """GPU hosts. Creating one returns its agent credential, once."""

    queryset = Node.objects.all()
    serializer_class = serializers.NodeSerializer
    filterset_class = filters.NodeFilter
    permission_classes = [IsPlatformAdmin]
    search_fields = ["name", "address"]
    ordering_fields = ["name", "state", "last_heartbeat_at", "created_at"]

    def perform_create(self, serializer: BaseSerializer[Any]) -> None:
        node = serializer.save()
        node._plaintext = credentials.issue(node)
        self.origin.created(node)

    @extend_schema(responses={201: serializers.NodeCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():
            self.perform_create(serializer)
        created = serializers.NodeCreatedSerializer(
            serializer.instance, context=self.get_serializer_context()
        )
        return Response(created.data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: serializers.NodeCreatedSerializer})
    @action(detail=True, methods=["post"], url_path="rotate-credential")
    def rotate_credential(self, request: Request, pk: str | None = None) -> Response:
        """Replace the node agent's credential; the agent must be given the new one."""
        node = self.get_object()
        with transaction.atomic():
            plaintext = credentials.issue(node)
            self.audit("rotate", node, {"credential_prefix": node.credential_prefix})
        node._plaintext = plaintext
        return Response(
            serializers.NodeCreatedSerializer(node, context=self.get_serializer_context()).data
        )


class GpuViewSet(viewsets.ReadOnlyModelViewSet):
    """GPUs as the node agents report them (read-only)."""

    queryset = Gpu.objects.select_related("node").all()
    serializer_class = serializers.GpuSerializer
    filterset_class = filters.GpuFilter
    permission_classes = [IsPlatformAdmin]
    search_fields = ["name", "uuid", "node__name"]
    ordering_fields = ["index", "memory_total_bytes", "memory_used_bytes"]


class DeploymentViewSet(AuditedModelViewSet):
    """Desired state: run a model version as N replicas. Scale with PATCH {"replicas": n}."""

    queryset = Deployment.objects.select_related("model_version__model").all()
    serializer_class = serializers.DeploymentSerializer
    filterset_class = filters.DeploymentFilter
    permission_classes = [IsPlatformAdmin]
    search_fields = ["name", "model_version__model__name", "model_version__label"]
    ordering_fields = ["name", "replicas", "created_at", "updated_at"]


class WorkerViewSet(viewsets.ReadOnlyModelViewSet):
    """Engine processes, as the scheduler and the node agents keep them (read-only)."""

    queryset = Worker.objects.select_related("deployment", "node").prefetch_related("gpus").all()
    serializer_class = serializers.WorkerSerializer
    filterset_class = filters.WorkerFilter
    permission_classes = [IsPlatformAdmin]
    search_fields = ["deployment__name", "node__name", "last_error"]
    ordering_fields = ["state", "created_at", "updated_at", "restarts"]
