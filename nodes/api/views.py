from __future__ import annotations

from typing import Any

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import serializers as drf_serializers
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from controlplane.api.permissions import IsPlatformAdmin
from controlplane.api.viewsets import AuditedMixin, AuditedModelViewSet
from nodes import credentials, services
from nodes.api import filters, serializers
from nodes.models import Deployment, Gpu, Node, NodeState, Worker


class NodeStateChangeSerializer(drf_serializers.Serializer):
    reason = drf_serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


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

    def perform_update(self, serializer: BaseSerializer[Any]) -> None:
        """A change of state is a cordon, drain or uncordon (nodes.services), whichever face
        asks for it; other fields are a plain audited update."""
        node: Node = serializer.instance  # type: ignore[assignment]
        data: dict[str, Any] = serializer.validated_data
        state = data.pop("state", None)
        reason = data.get("state_reason")
        with transaction.atomic():
            if state is not None and state != node.state:
                data.pop("state_reason", None)
                try:
                    services.set_node_state(node, state, reason or "", origin=self.origin)
                except services.Refused as exc:
                    raise ValidationError({"state": [str(exc)]}) from exc
                node.refresh_from_db()
            if data:
                super().perform_update(serializer)

    def _set_state(self, request: Request, state: NodeState) -> Response:
        node = self.get_object()
        body = NodeStateChangeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            node = services.set_node_state(
                node, state, body.validated_data["reason"], origin=self.origin
            )
        except services.Refused as exc:
            raise ValidationError({"state": [str(exc)]}) from exc
        return Response(self.get_serializer(node).data)

    @extend_schema(request=NodeStateChangeSerializer, responses={200: serializers.NodeSerializer})
    @action(detail=True, methods=["post"])
    def cordon(self, request: Request, pk: str | None = None) -> Response:
        """Keep the node's workers but place no new ones on it."""
        return self._set_state(request, NodeState.CORDONED)

    @extend_schema(request=NodeStateChangeSerializer, responses={200: serializers.NodeSerializer})
    @action(detail=True, methods=["post"])
    def drain(self, request: Request, pk: str | None = None) -> Response:
        """Move the node's workers elsewhere and place no new ones on it."""
        return self._set_state(request, NodeState.DRAINING)

    @extend_schema(request=NodeStateChangeSerializer, responses={200: serializers.NodeSerializer})
    @action(detail=True, methods=["post"])
    def uncordon(self, request: Request, pk: str | None = None) -> Response:
        """Let the scheduler place workers on the node again."""
        return self._set_state(request, NodeState.READY)


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

    def perform_update(self, serializer: BaseSerializer[Any]) -> None:
        """Replicas, traffic weight and desired state are a scale (nodes.services), recorded as
        one whichever face asks for it; other fields are a plain audited update."""
        deployment: Deployment = serializer.instance  # type: ignore[assignment]
        data: dict[str, Any] = serializer.validated_data
        scale = {name: data.pop(name) for name in services.SCALE_FIELDS if name in data}
        with transaction.atomic():
            if scale:
                services.scale_deployment(deployment, **scale, origin=self.origin)
                deployment.refresh_from_db()
            if data:
                super().perform_update(serializer)


class WorkerViewSet(AuditedMixin, viewsets.ReadOnlyModelViewSet):
    """Engine processes, as the scheduler and the node agents keep them. Read-only, but for
    two requests carried out by the node agent: restart and drain."""

    queryset = Worker.objects.select_related("deployment", "node").prefetch_related("gpus").all()
    serializer_class = serializers.WorkerSerializer
    filterset_class = filters.WorkerFilter
    permission_classes = [IsPlatformAdmin]
    search_fields = ["deployment__name", "node__name", "last_error"]
    ordering_fields = ["state", "created_at", "updated_at", "restarts"]

    def _request_change(self, request: Request, operation: Any) -> Response:
        worker = self.get_object()
        try:
            operation(worker, origin=self.origin)
        except services.Refused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        fresh = self.get_queryset().get(pk=worker.pk)
        return Response(self.get_serializer(fresh).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: serializers.WorkerSerializer})
    @action(detail=True, methods=["post"])
    def restart(self, request: Request, pk: str | None = None) -> Response:
        """Replace the worker's engine with a fresh one (the node agent does it: its state goes
        failed, starting, ready, each move in its events)."""
        return self._request_change(request, services.restart_worker)

    @extend_schema(request=None, responses={202: serializers.WorkerSerializer})
    @action(detail=True, methods=["post"])
    def drain(self, request: Request, pk: str | None = None) -> Response:
        """Stop the worker once its requests finish; the scheduler places a replacement if the
        deployment still wants one."""
        return self._request_change(request, services.drain_worker)
