"""The usage event: one typed record from the gateway's settlement to the UsageRecord row."""

from __future__ import annotations

import json
import time
from dataclasses import fields
from decimal import Decimal
from typing import Any

import pytest

from controlplane.models import UsageRecord
from metering import buffer as metering
from metering.events import UnreadableEvent, UsageEvent
from tests.gateway.harness import routed_model


def event(**kw: Any) -> UsageEvent:
    values: dict[str, Any] = {
        "request_id": "req_1",
        "tenant_id": 1,
        "endpoint": "chat.completions",
        "status": "ok",
        "http_status": 200,
        "created_at": 1_800_000_000.25,
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "time_to_first_token_ms": 40,
        "cost": Decimal("0.0000123457"),
    }
    values.update(kw)
    return UsageEvent(**values)


def test_every_field_of_the_event_is_a_column_of_the_usage_record_and_back() -> None:
    columns = {f.column for f in UsageRecord._meta.concrete_fields} - {"id"}
    assert {f.name for f in fields(UsageEvent)} == columns
    assert set(metering.INSERT_COLUMNS) == columns


def test_an_event_survives_its_encoding_exactly() -> None:
    original = event(api_key_id=4, worker_id=None, sent_completion_tokens=2, usage_counted=True)
    assert UsageEvent.decode(original.encode()) == original
    assert json.loads(original.encode())["cost"] == "0.0000123457"  # a string: exact


def test_an_event_in_the_previous_versions_dict_shape_is_still_read() -> None:
    old = {
        "request_id": "req_old",
        "tenant_id": 1,
        "api_key_id": None,
        "model_id": 2,
        "model_version_id": 3,
        "worker_id": 4,
        "endpoint": "completions",
        "streamed": True,
        "prompt_tokens": 5,
        "cached_tokens": 0,
        "completion_tokens": 7,
        "sent_completion_tokens": None,
        "usage_counted": False,
        "latency_ms": 30,
        "ttft_ms": 12,
        "status": "ok",
        "http_status": 200,
        "created_at": 1_800_000_000.0,
    }
    decoded = UsageEvent.decode(json.dumps(old).encode())
    assert decoded.time_to_first_token_ms == 12 and decoded.streamed
    assert decoded.cost is None  # priced when flushed, as the previous version did


@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[1]", b'{"tenant_id": 1}', b'{"request_id": "r", "tenant_id": "x"}'],
)
def test_anything_else_in_the_buffer_is_unreadable_not_a_crash(raw: bytes) -> None:
    with pytest.raises(UnreadableEvent):
        UsageEvent.decode(raw)


@pytest.mark.django_db
def test_the_bill_is_the_cost_the_event_carries_not_the_versions_price_at_flush() -> None:
    world = routed_model(1, name="billed", price_output_per_million=Decimal(1000))
    carried = event(
        request_id="req_carried",
        tenant_id=world.tenant.pk,
        model_version_id=world.version.pk,
        cost=Decimal("0.0000000042"),
    )
    assert metering.write_records([carried]) == 1
    assert UsageRecord.objects.get(request_id="req_carried").cost == Decimal("0.0000000042")


@pytest.mark.django_db
def test_an_old_shape_event_waiting_in_redis_during_an_upgrade_is_written_and_priced() -> None:
    from django.conf import settings

    if not settings.REDIS_URL:
        pytest.skip("REDIS_URL is not set: the Redis usage buffer is tested in CI")
    import redis

    world = routed_model(
        1,
        name="upgraded",
        price_input_per_million=Decimal(2),
        price_output_per_million=Decimal(10),
    )
    old = {  # what a gateway of the previous version pushed
        "request_id": "req_upgrade",
        "tenant_id": world.tenant.pk,
        "api_key_id": world.tenant.api_keys.get().pk,
        "model_id": world.model.pk,
        "model_version_id": world.version.pk,
        "worker_id": world.worker.pk,
        "endpoint": "chat.completions",
        "streamed": False,
        "prompt_tokens": 100,
        "cached_tokens": 0,
        "completion_tokens": 50,
        "sent_completion_tokens": None,
        "usage_counted": False,
        "latency_ms": 80,
        "ttft_ms": 25,
        "status": "ok",
        "http_status": 200,
        "created_at": time.time(),
    }
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(metering.USAGE_LIST_KEY, metering.USAGE_PROCESSING_KEY)
    client.rpush(metering.USAGE_LIST_KEY, json.dumps(old), b"garbage")
    assert metering.flush_redis() == 1  # the unreadable item is dropped, not retried forever
    record = UsageRecord.objects.get(request_id="req_upgrade")
    assert (record.prompt_tokens, record.completion_tokens) == (100, 50)
    assert record.time_to_first_token_ms == 25 and record.worker_id == world.worker.pk
    assert record.cost == (Decimal(100) * 2 + Decimal(50) * 10) / 1_000_000
    assert metering.buffered_count() == 0
