"""Small builders of sample data for the API tests: each returns a saved object."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from itertools import count
from typing import Any

from django.utils import timezone

from controlplane.models import AuditEvent, UsageRecord
from models_registry.models import EngineRuntime, Model, ModelGrant, ModelVersion
from nodes.models import Deployment, Gpu, Node, Worker
from tenants.models import ApiKey, Quota, Tenant

_serial = count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_serial)}"


def runtime(**fields: Any) -> EngineRuntime:
    defaults: dict[str, Any] = {
        "name": unique("vllm"),
        "version": "0.32.0",
        "python_path": "/opt/engine/bin/python",
    }
    return EngineRuntime.objects.create(**(defaults | fields))


def model(**fields: Any) -> Model:
    return Model.objects.create(**({"name": unique("tiny-llama")} | fields))


def version(**fields: Any) -> ModelVersion:
    defaults: dict[str, Any] = {
        "label": unique("v"),
        "weights_source": "/models/tiny-llama",
        "price_input_per_million": Decimal("0.5"),
        "price_output_per_million": Decimal("1.5"),
    }
    if "model" not in fields:
        defaults["model"] = model()
    if "runtime" not in fields:
        defaults["runtime"] = runtime()
    return ModelVersion.objects.create(**(defaults | fields))


def grant(tenant: Tenant, model_: Model | None = None) -> ModelGrant:
    return ModelGrant.objects.create(tenant=tenant, model=model_ or model())


def api_key(tenant: Tenant, **fields: Any) -> ApiKey:
    key, _ = ApiKey.issue(tenant=tenant, name=fields.pop("name", unique("key")), **fields)
    return key


def quota(tenant: Tenant, **fields: Any) -> Quota:
    return Quota.objects.create(tenant=tenant, **({"requests_per_minute": 60} | fields))


def node(**fields: Any) -> Node:
    defaults: dict[str, Any] = {"name": unique("node"), "address": "10.0.0.1"}
    return Node.objects.create(**(defaults | fields))


def gpu(node_: Node | None = None, **fields: Any) -> Gpu:
    node_ = node_ or node()
    defaults: dict[str, Any] = {
        "index": node_.gpus.count(),
        "uuid": unique("GPU-uuid"),
        "name": "NVIDIA H200",
        "memory_total_bytes": 141 * 2**30,
    }
    return Gpu.objects.create(node=node_, **(defaults | fields))


def deployment(**fields: Any) -> Deployment:
    defaults: dict[str, Any] = {"name": unique("deploy")}
    if "model_version" not in fields:
        defaults["model_version"] = version()
    return Deployment.objects.create(**(defaults | fields))


def worker(**fields: Any) -> Worker:
    defaults: dict[str, Any] = {}
    if "deployment" not in fields:
        defaults["deployment"] = deployment()
    if "node" not in fields:
        defaults["node"] = node()
    return Worker.objects.create(**(defaults | fields))


def usage(tenant: Tenant, **fields: Any) -> UsageRecord:
    defaults: dict[str, Any] = {
        "request_id": unique("req"),
        "endpoint": "chat.completions",
        "prompt_tokens": 12,
        "completion_tokens": 30,
        "cost": Decimal("0.0001"),
        "created_at": timezone.now() - timedelta(minutes=1),
    }
    return UsageRecord.objects.create(tenant=tenant, **(defaults | fields))


def audit_event(tenant: Tenant | None, **fields: Any) -> AuditEvent:
    defaults: dict[str, Any] = {
        "actor_repr": "system",
        "via": "system",
        "action": "create",
        "object_type": "tenants.Tenant",
        "object_id": str(tenant.pk) if tenant else "",
    }
    return AuditEvent.objects.create(tenant=tenant, **(defaults | fields))
