"""Settlement: the cost is computed once, at request time, from the price the request was
routed with; the bill, the budget counter and the `gateway_cost_usd` metric carry that one
figure. No engine: a fake upstream answers with usage."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from controlplane.models import UsageRecord
from gateway import quotas
from gateway.app import Gateway
from metering import buffer as metering
from models_registry.models import ModelVersion
from tenants.models import Quota
from tests.gateway.harness import (
    FakeUpstream,
    call,
    completion,
    forget_counters,
    free_port,
    routed_model,
)


async def _answer(request: web.Request) -> web.StreamResponse:
    return web.json_response(completion(prompt_tokens=1234, completion_tokens=567))


async def _budget_counter(gateway: Gateway, key: str) -> int:
    store = gateway.state.store
    if isinstance(store, quotas.RedisQuotaStore):
        return int(await store.redis.get(key) or 0)
    assert isinstance(store, quotas.MemoryQuotaStore)
    return store.counters[key][0]


def _cost_metric(tenant: str, model: str) -> float:
    value = REGISTRY.get_sample_value("gateway_cost_usd_total", {"tenant": tenant, "model": model})
    return value or 0.0


@pytest.mark.django_db(transaction=True)
def test_a_price_change_before_the_flush_changes_neither_the_bill_nor_the_budget_nor_the_metric(
    settings: Any,
) -> None:
    settings.USAGE_FLUSH_IN_PROCESS = False  # the flush below is the only one
    port = free_port()
    world = routed_model(
        port,
        name="priced",
        price_input_per_million=Decimal("2.5"),
        price_cached_input_per_million=Decimal("1"),
        price_output_per_million=Decimal("10.000003"),
    )
    Quota.objects.create(tenant=world.tenant, cost_per_day=Decimal("100"))
    routed_at = (Decimal(1234) * Decimal("2.5") + Decimal(567) * Decimal("10.000003")) / 10**6
    metric_before = _cost_metric(world.tenant.slug, "priced")
    key_id = world.tenant.api_keys.get().pk
    forget_counters(world.tenant.pk)

    async def scenario() -> tuple[str, int]:
        async with FakeUpstream(_answer, port):
            gateway = Gateway()
            await gateway.startup()
            try:
                answer = await call(
                    gateway,
                    "/v1/chat/completions",
                    {"model": "priced", "messages": [{"role": "user", "content": "hi"}]},
                    key=world.key,
                )
                assert answer.status == 200, answer.body
                snapshot = gateway.state.quota_limits
                limits = quotas.applicable(snapshot, world.tenant.pk, key_id, world.model.pk)
                day = next(
                    c
                    for c in quotas.build_checks(
                        limits,
                        tenant_id=world.tenant.pk,
                        key_id=key_id,
                        model_id=world.model.pk,
                        reserve_tokens=0,
                        reserve_cost=0,
                        now=time.time(),
                    )
                    if c.kind == "cost_per_day"
                )
                return answer.headers["x-request-id"], await _budget_counter(gateway, day.key)
            finally:
                await gateway.shutdown()

    request_id, budget_used = asyncio.run(scenario())
    # The price changes after the request, before its usage is flushed.
    ModelVersion.objects.filter(pk=world.version.pk).update(
        price_input_per_million=Decimal("7"), price_output_per_million=Decimal("70")
    )
    metering.flush_usage()

    bill = UsageRecord.objects.get(request_id=request_id).cost
    assert bill == routed_at.quantize(Decimal("1e-10"))
    assert budget_used == int(bill / Decimal("1e-10"))
    assert _cost_metric(world.tenant.slug, "priced") - metric_before == pytest.approx(float(bill))
