"""The node agent's side of the control plane: register, heartbeat, assignments, reports.

Every view authenticates the node credential and acts only on that node's own workers;
another node's worker is 404, as if it did not exist. The assignment feed is the only place
a worker's engine key is ever sent.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from models_registry import engine_command
from nodes import credentials, states
from nodes.agent import protocol
from nodes.agent_api.authentication import (
    BootstrapToken,
    IsNodeAgent,
    IsNodeAgentOrBootstrap,
    NodeCredentialAuthentication,
)
from nodes.agent_api.serializers import (
    HeartbeatSerializer,
    LogTailSerializer,
    RegisterSerializer,
    TransitionSerializer,
)
from nodes.models import (
    ACTIVE_WORKER_STATES,
    DeviceKind,
    Gpu,
    Node,
    NodeState,
    Worker,
    WorkerState,
)
from nodes.secrets import worker_api_key

LOG_TAIL_LIMIT = 16_000  # characters kept of an uploaded engine log tail


def redact(text: str, worker_id: int) -> str:
    """The engine key out of text an agent sent (see protocol.redact for why here too)."""
    return protocol.redact(text, worker_api_key(worker_id))


class AgentView(APIView):
    authentication_classes = [NodeCredentialAuthentication]
    permission_classes = [IsNodeAgent]

    @property
    def node(self) -> Node:
        assert isinstance(self.request.auth, Node)
        return self.request.auth

    def own_worker(self, worker_id: int) -> Worker:
        worker = Worker.objects.filter(pk=worker_id, node=self.node).first()
        if worker is None:
            raise Http404("No such worker on this node.")
        return worker


@extend_schema(exclude=True)
class RegisterView(AgentView):
    permission_classes = [IsNodeAgentOrBootstrap]

    def post(self, request: Request) -> Response:
        serializer = RegisterSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        issued: str | None = None
        with transaction.atomic():
            if isinstance(request.auth, BootstrapToken):
                if Node.objects.filter(name=data["name"]).exists():
                    return Response(
                        {
                            "name": [
                                f"Node {data['name']!r} already exists; use its credential "
                                "(an admin can issue a new one: manage.py createnode "
                                f"{data['name']} --rotate)."
                            ]
                        },
                        status=status.HTTP_409_CONFLICT,
                    )
                node = Node.objects.create(name=data["name"], address=data["address"])
                issued = credentials.issue(node)
            else:
                node = self.node
                if data["name"] != node.name:
                    return Response(
                        {"name": [f"This credential belongs to node {node.name!r}."]},
                        status=status.HTTP_400_BAD_REQUEST,
                    )
            problem = self._sync_devices(node, data["devices"])
            if problem:
                transaction.set_rollback(True)
                return Response({"devices": [problem]}, status=status.HTTP_400_BAD_REQUEST)
            kinds = {d["kind"] for d in data["devices"]}
            labels = dict(node.labels or {})
            # A default label so deployments can ask for GPU or CPU nodes; admins may override.
            labels.setdefault("accelerator", "gpu" if DeviceKind.GPU in kinds else "cpu")
            node.address = data["address"]
            node.agent_version = data["agent_version"]
            node.cpu_count = data["cpu_count"]
            node.memory_bytes = data["memory_bytes"]
            node.labels = labels
            node.last_heartbeat_at = timezone.now()
            fields = ["address", "agent_version", "cpu_count", "memory_bytes", "labels"]
            fields += ["last_heartbeat_at", "updated_at"]
            if node.state == NodeState.LOST:
                node.state, node.state_reason = NodeState.READY, "agent registered"
                fields += ["state", "state_reason"]
            node.save(update_fields=fields)
        body: dict[str, Any] = {
            "node": {"id": node.pk, "name": node.name, "state": node.state},
            "interval_seconds": settings.NODE_AGENT_INTERVAL_SECONDS,
        }
        if issued:
            body["credential"] = issued
        return Response(body, status=status.HTTP_201_CREATED if issued else status.HTTP_200_OK)

    def _sync_devices(self, node: Node, devices: list[dict[str, Any]]) -> str | None:
        taken = (
            Gpu.objects.filter(uuid__in=[d["uuid"] for d in devices])
            .exclude(node=node)
            .values_list("uuid", flat=True)
        )
        if taken:
            return f"Device {sorted(taken)[0]} is registered to another node."
        reported = {d["uuid"] for d in devices}
        # A device that vanished is forgotten unless a live worker still holds it.
        gone = Gpu.objects.filter(node=node).exclude(uuid__in=reported)
        gone.exclude(workers__state__in=ACTIVE_WORKER_STATES).delete()
        for device in devices:
            existing = Gpu.objects.filter(node=node, uuid=device["uuid"]).first()
            clash = Gpu.objects.filter(node=node, index=device["index"]).exclude(
                uuid=device["uuid"]
            )
            if clash.exists():
                # Indexes can shift when cards change; the UUID is what identifies a device.
                clash.exclude(workers__state__in=ACTIVE_WORKER_STATES).delete()
                if clash.exists():
                    return f"Device index {device['index']} is held by a running worker."
            values = {k: device[k] for k in ("index", "name", "kind", "memory_total_bytes")}
            values["memory_used_bytes"] = device["memory_used_bytes"]
            if existing is None:
                Gpu.objects.create(node=node, uuid=device["uuid"], **values)
            else:
                Gpu.objects.filter(pk=existing.pk).update(**values)
        return None


@extend_schema(exclude=True)
class HeartbeatView(AgentView):
    def post(self, request: Request) -> Response:
        serializer = HeartbeatSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        node = self.node
        now = timezone.now()
        with transaction.atomic():
            # .update(): heartbeats every few seconds must not trigger the scheduler.
            Node.objects.filter(pk=node.pk).update(last_heartbeat_at=now)
            for usage in serializer.validated_data["devices"]:
                Gpu.objects.filter(node=node, uuid=usage["uuid"]).update(
                    memory_used_bytes=usage["memory_used_bytes"]
                )
            if node.state == NodeState.LOST:
                node.state, node.state_reason = NodeState.READY, "heartbeat resumed"
                node.save(update_fields=["state", "state_reason", "updated_at"])
        return Response(
            {"state": node.state, "interval_seconds": settings.NODE_AGENT_INTERVAL_SECONDS}
        )


def assignment(worker: Worker) -> protocol.Assignment:
    """What the agent needs to run ``worker``, in the protocol's shape."""
    deployment = worker.deployment
    version = deployment.model_version
    devices = sorted(worker.gpus.all(), key=lambda g: g.index)
    command = engine_command.build(version, gpus_per_replica=deployment.gpus_per_replica)
    env = {str(k): str(v) for k, v in (version.runtime.environment or {}).items()}
    # Only exclusive devices (GPUs) are handed to the engine; the CPU pseudo-device is shared.
    gpu_uuids = [g.uuid for g in devices if g.is_exclusive]
    return protocol.Assignment(
        id=worker.pk,
        deployment=deployment.name,
        desired_state=worker.desired_state,
        state=worker.state,
        served_model_name=version.model.name,
        command=command,
        env=env,
        device_kind=devices[0].kind if devices else DeviceKind.CPU,
        gpu_uuids=gpu_uuids,
        port=worker.port,
        pid=worker.pid,
        restarts=worker.restarts,
        generation=worker.generation,
        fingerprint=fingerprint(command, env, gpu_uuids, worker.generation),
        api_key=worker_api_key(worker.pk),
    )


def fingerprint(
    command: list[str], env: dict[str, str], gpu_uuids: list[str], generation: int
) -> str:
    """Changes whenever the running engine is stale and must be replaced: a different command
    line, environment or set of devices, or a restart asked for (a raised generation)."""
    material = json.dumps([command, env, gpu_uuids, generation], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:16]


@extend_schema(exclude=True)
class AssignmentsView(AgentView):
    def get(self, request: Request) -> Response:
        workers: QuerySet[Worker] = (
            Worker.objects.filter(node=self.node)
            .exclude(state=WorkerState.STOPPED)
            .select_related(
                "deployment__model_version__model", "deployment__model_version__runtime"
            )
            .prefetch_related("gpus")
            .order_by("id")
        )
        return Response({"workers": [assignment(w).to_json() for w in workers]})


@extend_schema(exclude=True)
class TransitionView(AgentView):
    def post(self, request: Request, worker_id: int) -> Response:
        worker = self.own_worker(worker_id)
        serializer = TransitionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        fields: dict[str, Any] = {}
        for name in ("pid", "port"):
            if name in data:
                fields[name] = data[name]
        if "log_tail" in data:
            fields["log_tail"] = redact(data["log_tail"], worker.pk)[-LOG_TAIL_LIMIT:]
        try:
            moved = states.transition(
                worker,
                data["state"],
                redact(data["reason"], worker.pk),
                source="agent",
                exit_code=data.get("exit_code"),
                **fields,
            )
        except states.IllegalTransition as exc:
            return Response(
                {"state": [str(exc)], "current_state": exc.current},
                status=status.HTTP_409_CONFLICT,
            )
        except IntegrityError:
            return Response(
                {"port": ["Another live worker on this node already uses this port."]},
                status=status.HTTP_409_CONFLICT,
            )
        except Worker.DoesNotExist as exc:
            raise Http404("No such worker on this node.") from exc
        worker.refresh_from_db(fields=["state", "desired_state", "restarts"])
        return Response(
            {
                "moved": moved,
                "state": worker.state,
                "desired_state": worker.desired_state,
                "restarts": worker.restarts,
            }
        )


@extend_schema(exclude=True)
class LogTailView(AgentView):
    def post(self, request: Request, worker_id: int) -> Response:
        worker = self.own_worker(worker_id)
        serializer = LogTailSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        tail = redact(serializer.validated_data["tail"], worker.pk)[-LOG_TAIL_LIMIT:]
        Worker.objects.filter(pk=worker.pk).update(log_tail=tail)
        return Response(status=status.HTTP_204_NO_CONTENT)
