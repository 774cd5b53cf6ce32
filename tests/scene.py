"""One of everything the dashboard shows, for two tenants, so that every page, every form and
every action appears: the CSRF walk, the tenant-isolation matrix and the secrets checks build
on it (`scene` fixture in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from controlplane.models import AuditEvent, UsageRecord
from models_registry.models import EngineRuntime, Model, ModelGrant, ModelVersion, VersionState
from nodes.models import Deployment, Node, NodeState, Worker, WorkerState
from tenants.models import ApiKey, Quota, Tenant
from tests import factories

PROJECT_APPS = ("controlplane", "tenants", "models_registry", "nodes")


@dataclass
class Scene:
    tenant_a: Tenant
    tenant_b: Tenant
    model_a: Model  # granted to A only
    model_b: Model  # granted to B only
    model_free: Model  # granted to nobody: the grant forms offer it
    runtime: EngineRuntime
    version: ModelVersion  # of model_a, active
    deployment: Deployment
    node: Node  # ready, with a GPU and the worker
    cordoned_node: Node  # offers "uncordon"
    worker: Worker
    key_a: ApiKey
    key_b: ApiKey
    key_b_plaintext: str
    quota_a: Quota
    quota_b: Quota
    grant_a: ModelGrant
    grant_b: ModelGrant
    usage_b: UsageRecord
    audit_b: AuditEvent


def build(tenant_a: Tenant, tenant_b: Tenant) -> Scene:
    runtime = factories.runtime(name="scene-cpu")
    model_a = factories.model(name="scene-model-a")
    model_b = factories.model(name="scene-model-b-secret")
    model_free = factories.model(name="scene-model-free")
    version = factories.version(
        model=model_a,
        runtime=runtime,
        label="v1",
        state=VersionState.ACTIVE,
        price_input_per_million=Decimal("1"),
    )
    factories.version(model=model_b, runtime=runtime, label="v1")
    deployment = factories.deployment(name="scene-deploy", model_version=version, replicas=1)
    node = factories.node(name="scene-node", cpu_count=8, memory_bytes=64 << 30)
    factories.gpu(node)
    cordoned = factories.node(name="scene-cordoned", state=NodeState.CORDONED)
    worker = factories.worker(deployment=deployment, node=node, port=8100, state=WorkerState.READY)
    worker.gpus.set(node.gpus.all())
    grant_a = factories.grant(tenant_a, model_a)
    grant_b = factories.grant(tenant_b, model_b)
    key_a = factories.api_key(tenant_a, name="scene-key-a")
    key_b, key_b_plaintext = ApiKey.issue(tenant=tenant_b, name="scene-key-b-secret")
    quota_a = factories.quota(tenant_a, requests_per_minute=60)
    quota_b = factories.quota(tenant_b, requests_per_minute=77)
    factories.usage(tenant_a, model=model_a, api_key=key_a, worker=worker)
    usage_b = factories.usage(tenant_b, model=model_b, api_key=key_b, request_id="req-scene-b")
    factories.audit_event(tenant_a, object_repr="scene-a-event")
    audit_b = factories.audit_event(tenant_b, object_repr="scene-b-secret-event")
    return Scene(
        tenant_a=tenant_a,
        tenant_b=tenant_b,
        model_a=model_a,
        model_b=model_b,
        model_free=model_free,
        runtime=runtime,
        version=version,
        deployment=deployment,
        node=node,
        cordoned_node=cordoned,
        worker=worker,
        key_a=key_a,
        key_b=key_b,
        key_b_plaintext=key_b_plaintext,
        quota_a=quota_a,
        quota_b=quota_b,
        grant_a=grant_a,
        grant_b=grant_b,
        usage_b=usage_b,
        audit_b=audit_b,
    )


def database_state() -> dict[str, list[tuple[object, ...]]]:
    """Every row of the project's tables (and users), to show that a refused request changed
    nothing at all, wherever it might have written."""
    from django.apps import apps
    from django.contrib.auth import get_user_model

    state: dict[str, list[tuple[object, ...]]] = {}
    models = [m for label in PROJECT_APPS for m in apps.get_app_config(label).get_models()]
    for model in [*models, get_user_model()]:
        rows = model._default_manager.order_by("pk").values_list()
        state[model._meta.label] = [tuple(row) for row in rows]
    return state
