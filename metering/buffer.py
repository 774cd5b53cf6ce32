"""Metering: one UsageRecord per inference request, buffered durably, flushed in batches.

The gateway never writes to the database on the request path. It encodes a usage event
(`metering.events.UsageEvent`, compact JSON) and hands it to a buffer:

- with Redis (production): the event is pushed onto the list USAGE_LIST_KEY in the same Lua
  round trip that settles the request's quotas. `flush_redis` (the Celery task
  `metering.tasks.flush_usage`, on a beat schedule) moves a batch onto USAGE_PROCESSING_KEY
  atomically, inserts it, and only then deletes it. A flusher that dies mid-way leaves the batch
  in the processing list, which the next flush inserts again; the unique request_id (insert
  ignoring conflicts) makes that repeat harmless. So events are never lost and never doubled,
  and while PostgreSQL is down they simply wait in Redis.
- embedded (no Redis): `LocalUsageWriter`, a batch writer thread in the gateway process, with
  the same idempotent insert and retries while the database is unavailable.

The cost is in the event: the gateway computed it once, at request time, from the price the
request was routed with (models_registry/pricing.py). Only events buffered by a gateway of the
previous version lack it; those are priced here with `ModelVersion.cost`, as that version did.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, connections, transaction
from django.db.models import Q

from metering.events import UnreadableEvent, UsageEvent

logger = logging.getLogger(__name__)

USAGE_LIST_KEY = "controlplane:usage"
USAGE_PROCESSING_KEY = "controlplane:usage:processing"
FLUSH_LOCK_KEY = "controlplane:usage:flush-lock"
# Short, and renewed after every batch: a flusher that lost Redis mid-way cannot release its
# lock, and until it expires no flush runs (seen as a two-minute stall after a Redis restart
# with a 120 s lock). A batch of 500 inserts takes well under a second.
FLUSH_LOCK_SECONDS = 15

# Moves up to ARGV[1] events from the head of KEYS[1] onto KEYS[2] in one atomic step.
CLAIM_LUA = """
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #items > 0 then
  redis.call('RPUSH', KEYS[2], unpack(items))
  redis.call('LTRIM', KEYS[1], #items, -1)
end
return #items
"""


def write_records(events: Sequence[UsageEvent]) -> int:
    """Insert events as UsageRecords, skipping request ids already recorded. Returns inserted."""
    from controlplane.models import UsageRecord
    from models_registry.models import Model, ModelVersion
    from nodes.models import Worker
    from tenants.models import ApiKey, Tenant

    if not events:
        return 0

    # Foreign keys are checked up front: a row that was deleted since the request must not
    # poison the whole batch (the insert would fail forever). A link that is gone becomes NULL.
    def existing(model: Any, field: str) -> set[int]:
        ids: set[int] = {value for e in events if (value := getattr(e, field)) is not None}
        return set(model.objects.filter(pk__in=ids).values_list("pk", flat=True)) if ids else set()

    links = {
        "api_key_id": existing(ApiKey, "api_key_id"),
        "model_id": existing(Model, "model_id"),
        "model_version_id": existing(ModelVersion, "model_version_id"),
        "worker_id": existing(Worker, "worker_id"),
    }
    tenants = existing(Tenant, "tenant_id")
    # Only events of the previous version come without a cost: price them as it did.
    unpriced = links["model_version_id"] & {
        e.model_version_id or 0 for e in events if e.cost is None
    }
    versions = {v.pk: v for v in ModelVersion.objects.filter(pk__in=unpriced)}

    # Plain INSERT ... ON CONFLICT DO NOTHING (PostgreSQL and SQLite alike): model instances
    # cost far more Python than the insert itself, and this runs beside the event loop.
    ops = connection.ops
    rows = []
    kept: list[UsageEvent] = []
    for event in events:
        if event.tenant_id not in tenants:
            logger.error(
                "usage %s dropped: tenant %s no longer exists", event.request_id, event.tenant_id
            )
            continue
        values = _normalised(event, links, versions)
        values["cost"] = ops.adapt_decimalfield_value(values["cost"], 20, 10)
        values["created_at"] = ops.adapt_datetimefield_value(values["created_at"])
        rows.append(tuple(values[column] for column in INSERT_COLUMNS))
        kept.append(event)
    if not rows:
        return 0
    table = connection.ops.quote_name(UsageRecord._meta.db_table)
    # Only constant identifiers are interpolated; every value is a bound parameter.
    sql = (
        f"INSERT INTO {table} ({', '.join(INSERT_COLUMNS)}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(INSERT_COLUMNS))}) ON CONFLICT (request_id) DO NOTHING"
    )
    ids = [event.request_id[:64] for event in kept]
    # A key's "last used": its newest request in the batch, never moved backwards (batches
    # can arrive out of order). update(), not save(): no signal, no snapshot reload.
    last_used: dict[int, float] = {}
    for event in kept:
        key_id = event.api_key_id
        if key_id is not None and key_id in links["api_key_id"]:
            last_used[key_id] = max(last_used.get(key_id, 0.0), event.created_at)
    with transaction.atomic():
        before = UsageRecord.objects.filter(request_id__in=ids).count()
        with connection.cursor() as cursor:
            cursor.executemany(sql, rows)
        after = UsageRecord.objects.filter(request_id__in=ids).count()
        for key_id, at in last_used.items():
            moment = datetime.fromtimestamp(at, UTC)
            ApiKey.objects.filter(pk=key_id).filter(
                Q(last_used_at__isnull=True) | Q(last_used_at__lt=moment)
            ).update(last_used_at=moment)
    return after - before


# The event's fields are UsageRecord's columns (tests/gateway/test_events.py keeps it so).
INSERT_COLUMNS = tuple(f.name for f in fields(UsageEvent))


def _normalised(
    event: UsageEvent, links: dict[str, set[int]], versions: dict[int, Any]
) -> dict[str, Any]:
    """The event's values as the columns take them: bounded strings, sane counts, live links."""
    values = {f.name: getattr(event, f.name) for f in fields(UsageEvent)}
    for field, alive in links.items():
        if values[field] not in alive:
            values[field] = None
    values["request_id"] = event.request_id[:64]
    values["endpoint"] = event.endpoint[:32]
    values["status"] = event.status[:32]
    values["cached_tokens"] = min(event.cached_tokens, event.prompt_tokens)
    cost = event.cost
    if cost is None:
        version = versions.get(values["model_version_id"] or 0)
        cost = (
            version.cost(event.prompt_tokens, event.cached_tokens, event.completion_tokens)
            if version
            else Decimal(0)
        )
    values["cost"] = cost
    values["created_at"] = datetime.fromtimestamp(event.created_at, UTC)
    return values


def _decode(items: Iterable[bytes]) -> list[UsageEvent]:
    events = []
    for item in items:
        try:
            events.append(UsageEvent.decode(item))
        except UnreadableEvent as exc:
            logger.error("unreadable usage event dropped (%s): %r", exc, item[:200])
    return events


def _redis() -> Any:
    import redis

    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)


def flush_redis(batch_size: int | None = None, max_batches: int = 100) -> int:
    """Drain the Redis usage buffer into the database. Returns records inserted."""
    batch_size = batch_size or settings.USAGE_FLUSH_BATCH_SIZE
    client = _redis()
    lock = client.lock(FLUSH_LOCK_KEY, timeout=FLUSH_LOCK_SECONDS, blocking_timeout=0)
    if not lock.acquire(blocking=False):
        return 0  # another flusher is at it
    inserted = 0
    try:
        claim = client.register_script(CLAIM_LUA)
        for _ in range(max_batches):
            items = client.lrange(USAGE_PROCESSING_KEY, 0, -1)
            if not items:
                if not claim(keys=[USAGE_LIST_KEY, USAGE_PROCESSING_KEY], args=[batch_size]):
                    break
                items = client.lrange(USAGE_PROCESSING_KEY, 0, -1)
            inserted += write_records(_decode(items))
            # Only after the insert committed: a crash before this line re-inserts (harmlessly).
            # LTRIM, not DEL: only the events handled here leave the list.
            client.ltrim(USAGE_PROCESSING_KEY, len(items), -1)
            lock.extend(FLUSH_LOCK_SECONDS, replace_ttl=True)
    finally:
        try:
            lock.release()
        except Exception:  # the lock expired; the next flush takes over
            logger.warning("usage flush lock expired before release")
    return inserted


def buffered_count() -> int:
    client = _redis()
    return int(client.llen(USAGE_LIST_KEY)) + int(client.llen(USAGE_PROCESSING_KEY))


class LocalUsageWriter:
    """Embedded mode: a thread that writes a batch about every `interval` seconds, retrying
    while the database is down. `put` is a deque append: nothing on the request path waits."""

    def __init__(self, batch_size: int = 500, interval: float = 1.0) -> None:
        self.items: deque[bytes] = deque()
        self.batch_size = batch_size
        self.interval = interval
        self.wake = threading.Event()
        self.writing = False
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self.thread.start()

    def put(self, item: bytes) -> None:
        self.items.append(item)

    def _run(self) -> None:
        backoff = 0.5
        batch: list[bytes] = []
        while True:
            if not batch:
                self.wake.wait(self.interval)
                self.wake.clear()
            self.writing = True
            while len(batch) < self.batch_size and self.items:
                batch.append(self.items.popleft())
            if not batch:
                self.writing = False
                if self.stopping:
                    connections.close_all()
                    return
                continue
            try:
                close_old_connections()
                write_records(_decode(batch))
            except Exception:
                logger.exception(
                    "usage batch of %d not written yet; retrying in %.1fs", len(batch), backoff
                )
                time.sleep(backoff)
                backoff = min(backoff * 2, 10)
                continue
            backoff = 0.5
            batch = []
            self.writing = False

    def flush(self, timeout: float = 30) -> bool:
        """Wait until every event handed over so far is in the database."""
        deadline = time.monotonic() + timeout
        while self.items or self.writing:
            self.wake.set()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def stop(self, timeout: float = 30) -> None:
        self.flush(timeout)
        self.stopping = True
        self.wake.set()
        self.thread.join(timeout)


class RedisUsageFlusher:
    """For deployments without a Celery worker (eager mode): flush the Redis buffer from here."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="usage-flusher", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                close_old_connections()
                flush_redis()
            except Exception:
                logger.exception("usage flush failed; the events stay buffered in Redis")
        connections.close_all()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(10)
        try:
            flush_redis()
        except Exception:
            logger.exception("final usage flush failed; the events stay buffered in Redis")


_local_writer: LocalUsageWriter | None = None


def local_writer() -> LocalUsageWriter:
    global _local_writer
    if _local_writer is None:
        _local_writer = LocalUsageWriter(batch_size=settings.USAGE_FLUSH_BATCH_SIZE)
    return _local_writer


def flush_usage() -> int:
    """Whatever the mode, get buffered usage into the database (Celery task and tests)."""
    if settings.REDIS_URL:
        return flush_redis()
    if _local_writer is not None:
        _local_writer.flush()
    return 0
