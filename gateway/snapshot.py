"""What the gateway knows, read from the database off the hot path.

Each loader runs in a thread (at start-up, on an invalidation message, and on a short timer)
and returns an immutable snapshot; the event loop swaps the reference, so a request never
waits on PostgreSQL and never sees a half-loaded table.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import close_old_connections

from models_registry.pricing import Prices, cost_units
from tenants.scopes import QuotaScope


@dataclass(frozen=True)
class KeyEntry:
    key_id: int
    prefix: str
    hashed: str
    tenant_id: int
    tenant_slug: str
    expires_at: float | None  # epoch seconds
    models: frozenset[str]  # names this key may use
    engine_priority: int
    cache_salt: str


@dataclass(frozen=True)
class ModelEntry:
    model_id: int
    name: str
    created: int


@dataclass
class Upstream:
    """One routable worker. `outstanding` is this process's count of requests in flight."""

    worker_id: int
    deployment_id: int
    base_url: str
    auth_header: str
    version_id: int
    priority_scheduling: bool
    prices: Prices  # the version's, when the snapshot was loaded: what its requests cost
    outstanding: int = 0


@dataclass(frozen=True)
class DeploymentRoute:
    deployment_id: int
    weight: int
    upstreams: tuple[Upstream, ...]


@dataclass(frozen=True)
class QuotaLimits:
    quota_id: int
    scope: QuotaScope
    requests_per_minute: int | None
    tokens_per_minute: int | None
    concurrent_requests: int | None
    tokens_per_day: int | None
    tokens_per_month: int | None
    cost_per_day: int | None  # in COST_UNIT
    cost_per_month: int | None


@dataclass(frozen=True)
class KeySnapshot:
    by_prefix: dict[str, KeyEntry] = field(default_factory=dict)


@dataclass(frozen=True)
class RouteSnapshot:
    models: dict[str, ModelEntry] = field(default_factory=dict)
    routes: dict[str, tuple[DeploymentRoute, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class QuotaSnapshot:
    # (tenant_id, api_key_id or None, model_id or None) -> limits
    by_scope: dict[tuple[int, int | None, int | None], QuotaLimits] = field(default_factory=dict)


def load_keys() -> KeySnapshot:
    from models_registry.models import ModelGrant
    from nodes.secrets import prefix_cache_salt
    from tenants.models import ApiKey, Tenant

    close_old_connections()
    granted: dict[int, set[str]] = defaultdict(set)
    for tenant_id, name in ModelGrant.objects.values_list("tenant_id", "model__name"):
        granted[tenant_id].add(name)
    narrowed: dict[int, set[str]] = defaultdict(set)
    through = ApiKey.allowed_models.through
    for key_id, name in through.objects.values_list("apikey_id", "model__name"):
        narrowed[key_id].add(name)

    # Per tenant (far fewer than keys), from the tenant's own rule.
    priority = {
        tenant.pk: tenant.engine_priority for tenant in Tenant.objects.only("id", "priority_class")
    }
    salts: dict[int, str] = {}  # one HMAC per tenant, not per key
    by_prefix: dict[str, KeyEntry] = {}
    rows = ApiKey.objects.filter(revoked_at__isnull=True, tenant__active=True).values_list(
        "id", "prefix", "hashed_key", "tenant_id", "tenant__slug", "expires_at"
    )
    for key_id, prefix, hashed, tenant_id, slug, expires_at in rows:
        if tenant_id not in priority:
            continue  # its tenant was deleted between the two reads
        models = granted.get(tenant_id, set())
        if key_id in narrowed:
            models = models & narrowed[key_id]
        by_prefix[prefix] = KeyEntry(
            key_id=key_id,
            prefix=prefix,
            hashed=hashed,
            tenant_id=tenant_id,
            tenant_slug=slug,
            expires_at=expires_at.timestamp() if expires_at else None,
            models=frozenset(models),
            engine_priority=priority[tenant_id],
            cache_salt=salts.get(tenant_id)
            or salts.setdefault(tenant_id, prefix_cache_salt(tenant_id)),
        )
    close_old_connections()
    return KeySnapshot(by_prefix=by_prefix)


def load_routes(previous: RouteSnapshot | None = None) -> RouteSnapshot:
    """Routable workers: ready, of a running deployment, of an active version, on a live node.

    Upstream objects of unchanged workers are reused, so their outstanding counts survive.
    """
    from models_registry import engine_args
    from models_registry.models import Model, VersionState
    from nodes.models import DesiredState, NodeState, Worker, WorkerState
    from nodes.secrets import worker_api_key

    close_old_connections()
    old: dict[int, Upstream] = {}
    if previous is not None:
        for deployments in previous.routes.values():
            for deployment in deployments:
                for upstream in deployment.upstreams:
                    old[upstream.worker_id] = upstream

    models = {
        m.name: ModelEntry(model_id=m.pk, name=m.name, created=int(m.created_at.timestamp()))
        for m in Model.objects.all()
    }
    workers = (
        Worker.objects.filter(
            state=WorkerState.READY,
            deployment__desired_state=DesiredState.RUNNING,
            deployment__model_version__state=VersionState.ACTIVE,
            node__isnull=False,
            port__isnull=False,
        )
        .exclude(node__state=NodeState.LOST)
        .select_related("node", "deployment__model_version__model")
        .order_by("id")
    )
    grouped: dict[str, dict[int, tuple[int, list[Upstream]]]] = defaultdict(dict)
    for worker in workers:
        dep = worker.deployment
        version = dep.model_version
        assert worker.node is not None
        base_url = f"http://{worker.node.address}:{worker.port}"
        priority = engine_args.scheduling_policy(version.extra_args) == "priority"
        upstream = Upstream(
            worker_id=worker.pk,
            deployment_id=dep.pk,
            base_url=base_url,
            auth_header=f"Bearer {worker_api_key(worker.pk)}",
            version_id=version.pk,
            priority_scheduling=priority,
            prices=Prices(
                input=version.price_input_per_million,
                cached_input=version.price_cached_input_per_million,
                output=version.price_output_per_million,
            ),
        )
        previous_upstream = old.get(worker.pk)
        if previous_upstream is not None:
            upstream.outstanding = previous_upstream.outstanding
            if _same_target(previous_upstream, upstream):
                upstream = previous_upstream
        entry = grouped[version.model.name].setdefault(dep.pk, (dep.traffic_weight, []))
        entry[1].append(upstream)

    routes = {
        name: tuple(
            DeploymentRoute(deployment_id=dep_id, weight=weight, upstreams=tuple(ups))
            for dep_id, (weight, ups) in sorted(deps.items())
            if weight > 0
        )
        for name, deps in grouped.items()
    }
    close_old_connections()
    return RouteSnapshot(models=models, routes=routes)


def _same_target(a: Upstream, b: Upstream) -> bool:
    return (
        a.base_url == b.base_url
        and a.version_id == b.version_id
        and a.deployment_id == b.deployment_id
        and a.priority_scheduling == b.priority_scheduling
        and a.prices == b.prices
    )


def _cost_units(value: Decimal | None) -> int | None:
    return None if value is None else cost_units(value)


def load_quotas() -> QuotaSnapshot:
    from tenants.models import Quota

    close_old_connections()
    by_scope: dict[tuple[int, int | None, int | None], QuotaLimits] = {}
    for quota in Quota.objects.filter(tenant__active=True):
        by_scope[(quota.tenant_id, quota.api_key_id, quota.model_id)] = QuotaLimits(
            quota_id=quota.pk,
            scope=quota.scope,
            requests_per_minute=quota.requests_per_minute,
            tokens_per_minute=quota.tokens_per_minute,
            concurrent_requests=quota.concurrent_requests,
            tokens_per_day=quota.tokens_per_day,
            tokens_per_month=quota.tokens_per_month,
            cost_per_day=_cost_units(quota.cost_per_day),
            cost_per_month=_cost_units(quota.cost_per_month),
        )
    close_old_connections()
    return QuotaSnapshot(by_scope=by_scope)
