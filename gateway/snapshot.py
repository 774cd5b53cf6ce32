"""What the gateway knows, read from the database off the hot path.

Each loader runs in a thread (at start-up, on an invalidation message, and on a short timer)
and returns an immutable snapshot; the event loop swaps the reference, so a request never
waits on PostgreSQL and never sees a half-loaded table.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db import close_old_connections

# Costs are counted in quota counters as integers of this many USD (the UsageRecord's scale).
COST_UNIT = Decimal("0.0000000001")


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
    task: str
    created: int


@dataclass
class Upstream:
    """One routable worker. `outstanding` is this process's count of requests in flight."""

    worker_id: int
    deployment_id: int
    base_url: str
    auth_header: str
    version_id: int
    version_label: str
    priority_scheduling: bool
    price_input: Decimal
    price_cached_input: Decimal
    price_output: Decimal
    outstanding: int = 0

    def cost(self, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> Decimal:
        # Same formula as ModelVersion.cost, on prices copied into the snapshot.
        uncached = max(prompt_tokens - cached_tokens, 0)
        return (
            Decimal(uncached) * self.price_input
            + Decimal(cached_tokens) * self.price_cached_input
            + Decimal(completion_tokens) * self.price_output
        ) / Decimal(1_000_000)

    @property
    def max_price_per_token(self) -> Decimal:
        return max(self.price_input, self.price_output) / Decimal(1_000_000)


@dataclass(frozen=True)
class DeploymentRoute:
    deployment_id: int
    weight: int
    upstreams: tuple[Upstream, ...]


@dataclass(frozen=True)
class QuotaLimits:
    quota_id: int
    scope: str  # "tenant", "key", "model" or "key+model"
    requests_per_minute: int | None
    tokens_per_minute: int | None
    concurrent_requests: int | None
    tokens_per_day: int | None
    tokens_per_month: int | None
    cost_per_day: int | None  # in COST_UNIT
    cost_per_month: int | None

    @property
    def has_budget(self) -> bool:
        return any(
            v is not None
            for v in (
                self.tokens_per_day,
                self.tokens_per_month,
                self.cost_per_day,
                self.cost_per_month,
            )
        )


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


def cache_salt_for(tenant_id: int) -> str:
    """A per-tenant salt for vLLM's prefix cache: stable, secret, never shared across tenants."""
    secret = settings.WORKER_KEY_SECRET.encode()
    return hmac.new(secret, f"cache-salt:{tenant_id}".encode(), hashlib.sha256).hexdigest()[:32]


def load_keys() -> KeySnapshot:
    from models_registry.models import ModelGrant
    from tenants.models import ApiKey

    close_old_connections()
    granted: dict[int, set[str]] = defaultdict(set)
    for tenant_id, name in ModelGrant.objects.values_list("tenant_id", "model__name"):
        granted[tenant_id].add(name)
    narrowed: dict[int, set[str]] = defaultdict(set)
    through = ApiKey.allowed_models.through
    for key_id, name in through.objects.values_list("apikey_id", "model__name"):
        narrowed[key_id].add(name)

    by_prefix: dict[str, KeyEntry] = {}
    rows = ApiKey.objects.filter(revoked_at__isnull=True, tenant__active=True).values_list(
        "id",
        "prefix",
        "hashed_key",
        "tenant_id",
        "tenant__slug",
        "tenant__priority_class",
        "expires_at",
    )
    from tenants.models import ENGINE_PRIORITY, PriorityClass

    for key_id, prefix, hashed, tenant_id, slug, priority_class, expires_at in rows:
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
            engine_priority=ENGINE_PRIORITY[PriorityClass(priority_class)],
            cache_salt=cache_salt_for(tenant_id),
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
        m.name: ModelEntry(
            model_id=m.pk, name=m.name, task=m.task, created=int(m.created_at.timestamp())
        )
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
            version_label=version.label,
            priority_scheduling=priority,
            price_input=version.price_input_per_million,
            price_cached_input=version.price_cached_input_per_million,
            price_output=version.price_output_per_million,
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
        and (a.price_input, a.price_cached_input, a.price_output)
        == (b.price_input, b.price_cached_input, b.price_output)
    )


def _cost_units(value: Decimal | None) -> int | None:
    return None if value is None else int(value / COST_UNIT)


def load_quotas() -> QuotaSnapshot:
    from tenants.models import Quota

    close_old_connections()
    by_scope: dict[tuple[int, int | None, int | None], QuotaLimits] = {}
    for quota in Quota.objects.filter(tenant__active=True):
        scope = {
            (False, False): "tenant",
            (True, False): "key",
            (False, True): "model",
            (True, True): "key+model",
        }[(quota.api_key_id is not None, quota.model_id is not None)]
        by_scope[(quota.tenant_id, quota.api_key_id, quota.model_id)] = QuotaLimits(
            quota_id=quota.pk,
            scope=scope,
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
