"""Quota rules and the usage buffer, without engines: the in-process store always, Redis when
REDIS_URL is set (CI sets it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings

from controlplane.models import UsageRecord
from gateway import quotas
from gateway.snapshot import QuotaLimits
from metering import buffer as metering
from metering.events import UsageEvent
from tenants.models import ApiKey, Tenant
from tenants.scopes import QuotaScope

NOW = 1_800_000_030.0  # 30 s into a minute


def limits(**kw: Any) -> QuotaLimits:
    values: dict[str, Any] = dict.fromkeys(
        (
            "requests_per_minute",
            "tokens_per_minute",
            "concurrent_requests",
            "tokens_per_day",
            "tokens_per_month",
            "cost_per_day",
            "cost_per_month",
        ),
    )
    values.update(kw)
    return QuotaLimits(quota_id=1, scope=QuotaScope.TENANT, **values)


def checks(
    quota: QuotaLimits, tokens: int = 10, cost: int = 0, now: float = NOW
) -> list[quotas.Check]:
    return quotas.build_checks(
        [quota],
        tenant_id=7,
        key_id=8,
        model_id=9,
        reserve_tokens=tokens,
        reserve_cost=cost,
        now=now,
    )


def admit(
    store: quotas.QuotaStore, rid: str, cs: list[quotas.Check], now: float = NOW
) -> quotas.Admission:
    return asyncio.run(
        quotas.admit(
            store, rid, cs, now=now, rate_limits_when_down="admit", budgets_when_down="refuse"
        )
    )


def settle(
    store: quotas.QuotaStore, rid: str, cs: list[quotas.Check], reserved: int, actual: int
) -> None:
    deltas = quotas.settlement_deltas(cs, reserved, 0, actual, 0)
    asyncio.run(store.settle(rid, cs, deltas, b""))


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[quotas.QuotaStore]:
    if request.param == "memory":
        yield quotas.MemoryQuotaStore(lambda item: None)
        return
    if not settings.REDIS_URL:
        pytest.skip("REDIS_URL is not set: the Redis quota store is tested in CI")
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter("cpq:t7*"):
        client.delete(key)
    # A fresh asyncio Redis client per asyncio.run: build the store lazily inside each run.
    yield _PerRunRedisStore(settings.REDIS_URL)
    for key in client.scan_iter("cpq:t7*"):
        client.delete(key)


class _PerRunRedisStore:
    """RedisQuotaStore bound to the running loop (each asyncio.run has its own)."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def admit(self, *args: Any) -> Any:
        store = quotas.RedisQuotaStore(self.url, "test:usage")
        try:
            return await store.admit(*args)
        finally:
            await store.close()

    async def settle(self, *args: Any) -> Any:
        store = quotas.RedisQuotaStore(self.url, "test:usage")
        try:
            return await store.settle(*args)
        finally:
            await store.close()


def test_it_refuses_the_request_over_the_per_minute_limit(store: Any) -> None:
    quota = limits(requests_per_minute=3)
    for i, remaining in enumerate((2, 1, 0)):
        admission = admit(store, f"r{i}", checks(quota))
        assert admission.allowed and admission.requests == (3, remaining, NOW - 30 + 60)
    refused = admit(store, "r3", checks(quota))
    assert not refused.allowed and refused.refused is not None
    assert refused.refused.kind == "requests" and refused.used == 3


def test_it_admits_again_in_the_next_minute(store: Any) -> None:
    quota = limits(requests_per_minute=1)
    assert admit(store, "a", checks(quota)).allowed
    assert not admit(store, "b", checks(quota)).allowed
    assert admit(store, "c", checks(quota, now=NOW + 60), now=NOW + 60).allowed


def test_it_settles_token_reservations_to_the_real_count(store: Any) -> None:
    quota = limits(tokens_per_minute=100)
    first = checks(quota, tokens=60)
    assert admit(store, "a", first).allowed
    assert not admit(store, "b", checks(quota, tokens=60)).allowed  # 60 + 60 > 100
    settle(store, "a", first, reserved=60, actual=15)  # it used 15, not 60
    admission = admit(store, "c", checks(quota, tokens=60))
    assert admission.allowed and admission.tokens is not None and admission.tokens[1] == 100 - 75


def test_it_frees_a_concurrency_slot_when_the_request_ends(store: Any) -> None:
    quota = limits(concurrent_requests=1)
    held = checks(quota)
    assert admit(store, "a", held).allowed
    refused = admit(store, "b", checks(quota))
    assert (
        not refused.allowed
        and refused.refused is not None
        and refused.refused.kind == "concurrency"
    )
    settle(store, "a", held, reserved=10, actual=10)
    assert admit(store, "b", checks(quota)).allowed


def test_it_refuses_a_reservation_that_does_not_fit_the_daily_budget(store: Any) -> None:
    quota = limits(tokens_per_day=50, cost_per_day=1000)
    refused = admit(store, "a", checks(quota, tokens=51))
    assert not refused.allowed and refused.refused is not None
    assert refused.refused.kind == "tokens_per_day" and refused.refused.budget
    assert admit(store, "b", checks(quota, tokens=50, cost=1000)).allowed
    assert not admit(store, "c", checks(quota, tokens=0, cost=0)).allowed  # budget spent


def test_a_refusal_changes_no_counter(store: Any) -> None:
    quota = limits(requests_per_minute=10, tokens_per_minute=20)
    assert admit(store, "a", checks(quota, tokens=15)).allowed
    assert not admit(store, "b", checks(quota, tokens=15)).allowed
    admission = admit(store, "c", checks(quota, tokens=5))
    assert admission.allowed and admission.requests is not None and admission.requests[1] == 8


def test_when_redis_is_down_budgets_are_refused_and_rate_limits_admitted() -> None:
    async def run(quota: QuotaLimits) -> quotas.Admission:
        store = quotas.RedisQuotaStore("redis://127.0.0.1:8299/0", "test:usage")
        try:
            return await quotas.admit(
                store,
                "a",
                checks(quota),
                now=NOW,
                rate_limits_when_down="admit",
                budgets_when_down="refuse",
            )
        finally:
            await store.close()

    assert asyncio.run(run(limits(requests_per_minute=5))).allowed
    down = asyncio.run(run(limits(requests_per_minute=5, cost_per_month=100)))
    assert not down.allowed and down.unavailable


def test_reset_durations_read_like_openais() -> None:
    assert [quotas.format_reset(s) for s in (0.2, 59, 61, 3725)] == ["1s", "59s", "1m1s", "1h2m5s"]


# --- the usage buffer -----------------------------------------------------------------------
def _event(tenant: Tenant, request_id: str, **kw: Any) -> UsageEvent:
    values: dict[str, Any] = {
        "request_id": request_id,
        "tenant_id": tenant.pk,
        "endpoint": "completions",
        "prompt_tokens": 5,
        "completion_tokens": 7,
        "latency_ms": 3,
        "status": "ok",
        "http_status": 200,
        "created_at": time.time(),
        "cost": Decimal(0),
    }
    values.update(kw)
    return UsageEvent(**values)


@pytest.mark.django_db
def test_writing_the_same_request_twice_records_it_once(tenant_a: Tenant) -> None:
    events = [_event(tenant_a, "req_same"), _event(tenant_a, "req_other")]
    assert metering.write_records(events) == 2
    assert metering.write_records(events) == 0
    assert UsageRecord.objects.filter(request_id="req_same").count() == 1


@pytest.mark.django_db
def test_a_keys_last_use_is_its_newest_recorded_request_and_never_goes_back(
    tenant_a: Tenant,
) -> None:
    key, _ = ApiKey.issue(tenant=tenant_a, name="used")
    t = time.time()
    metering.write_records(
        [_event(tenant_a, "req_1", api_key_id=key.pk, created_at=t - 30),
         _event(tenant_a, "req_2", api_key_id=key.pk, created_at=t - 10)]
    )  # fmt: skip
    key.refresh_from_db()
    assert key.last_used_at is not None and abs(key.last_used_at.timestamp() - (t - 10)) < 0.01
    metering.write_records([_event(tenant_a, "req_late", api_key_id=key.pk, created_at=t - 60)])
    key.refresh_from_db()
    assert abs(key.last_used_at.timestamp() - (t - 10)) < 0.01  # an older batch, flushed late


@pytest.mark.django_db
def test_a_record_of_a_deleted_key_keeps_its_tenant_and_loses_the_link(tenant_a: Tenant) -> None:
    metering.write_records([_event(tenant_a, "req_gone", api_key_id=999999, prompt_tokens=3)])
    record = UsageRecord.objects.get(request_id="req_gone")
    assert record.api_key_id is None and record.prompt_tokens == 3 and record.cost == Decimal(0)


@pytest.mark.django_db
def test_the_redis_buffer_survives_a_flusher_that_died_mid_batch(tenant_a: Tenant) -> None:
    if not settings.REDIS_URL:
        pytest.skip("REDIS_URL is not set: the Redis usage buffer is tested in CI")
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(metering.USAGE_LIST_KEY, metering.USAGE_PROCESSING_KEY)
    for i in range(5):
        client.rpush(metering.USAGE_LIST_KEY, _event(tenant_a, f"req_buf{i}").encode())
    # A flusher claimed two events and inserted them, then died before trimming them.
    claim = client.register_script(metering.CLAIM_LUA)
    claim(keys=[metering.USAGE_LIST_KEY, metering.USAGE_PROCESSING_KEY], args=[2])
    metering.write_records(
        [UsageEvent.decode(x) for x in client.lrange(metering.USAGE_PROCESSING_KEY, 0, -1)]
    )
    assert metering.flush_redis(batch_size=2) == 3  # the two again (ignored), then three new
    assert UsageRecord.objects.filter(request_id__startswith="req_buf").count() == 5
    assert metering.buffered_count() == 0


def test_the_prompt_bound_counts_text_bytes_token_ids_and_template_markers() -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "héllo"}]},
        ]
    }
    # "system" 6 + "Be brief." 9 + "user" 4 + "text" 4 + "héllo" 6 bytes, 2 x 8, 16.
    assert quotas.prompt_token_bound(chat, "chat.completions") == 29 + 16 + 16
    assert quotas.prompt_token_bound({"prompt": "abc"}, "completions") == 3
    assert quotas.prompt_token_bound({"prompt": [[1, 2, 3], "ab"]}, "completions") == 5
    assert quotas.prompt_token_bound({"input": ["a", "bc"]}, "embeddings") == 3
    assert quotas.prompt_token_bound({"messages": "not a list"}, "chat.completions") == 10 + 16
    assert quotas.prompt_token_bound({}, "completions") == 0
