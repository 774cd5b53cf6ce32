"""The snapshots carry the domain's own rules: a tenant's engine priority, its cache salt, a
quota's scope and a version's prices, each from its one home."""

from __future__ import annotations

from decimal import Decimal

import pytest

from gateway.snapshot import load_keys, load_quotas, load_routes
from models_registry.pricing import Prices
from nodes.secrets import prefix_cache_salt
from tenants.models import ENGINE_PRIORITY, ApiKey, PriorityClass, Quota, Tenant
from tenants.scopes import QuotaScope
from tests.gateway.harness import routed_model


@pytest.mark.django_db(transaction=True)  # the loaders close their connection
def test_a_keys_entry_has_its_tenants_engine_priority_and_cache_salt() -> None:
    high = Tenant.objects.create(slug="high", name="High", priority_class=PriorityClass.HIGH)
    low = Tenant.objects.create(slug="low", name="Low", priority_class=PriorityClass.LOW)
    high_key, _ = ApiKey.issue(tenant=high, name="k")
    low_key, _ = ApiKey.issue(tenant=low, name="k")
    entries = load_keys().by_prefix
    assert entries[high_key.prefix].engine_priority == high.engine_priority
    assert entries[low_key.prefix].engine_priority == ENGINE_PRIORITY[PriorityClass.LOW]
    assert high.engine_priority < low.engine_priority  # vLLM serves lower numbers first
    assert entries[high_key.prefix].cache_salt == prefix_cache_salt(high.pk)
    assert prefix_cache_salt(high.pk) != prefix_cache_salt(low.pk)


@pytest.mark.django_db(transaction=True)  # the loaders close their connection
def test_each_quota_is_loaded_with_its_scope() -> None:
    world = routed_model(1, name="scoped")
    key = world.tenant.api_keys.get()
    Quota.objects.create(tenant=world.tenant, requests_per_minute=1)
    Quota.objects.create(tenant=world.tenant, api_key=key, model=world.model, tokens_per_day=5)
    by_scope = load_quotas().by_scope
    assert by_scope[(world.tenant.pk, None, None)].scope is QuotaScope.TENANT
    assert by_scope[(world.tenant.pk, key.pk, world.model.pk)].scope is QuotaScope.KEY_MODEL
    assert Quota.objects.get(api_key=key).scope is QuotaScope.KEY_MODEL


@pytest.mark.django_db(transaction=True)  # the loaders close their connection
def test_a_routed_worker_carries_its_versions_prices() -> None:
    world = routed_model(
        1,
        name="routed",
        price_input_per_million=Decimal("1.5"),
        price_cached_input_per_million=Decimal("0.5"),
        price_output_per_million=Decimal(6),
    )
    (route,) = load_routes().routes["routed"]
    (upstream,) = route.upstreams
    assert upstream.prices == Prices(Decimal("1.5"), Decimal("0.5"), Decimal(6))
    assert world.version.cost(1000, 200, 10) == Decimal("0.00136")  # the one formula
