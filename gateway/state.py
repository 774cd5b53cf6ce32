"""What a gateway process holds between requests, and keeps fresh.

Key, route and quota snapshots are loaded on one database thread (one connection per process)
and swapped whole, so a request never waits on PostgreSQL. They are reloaded when
`controlplane.invalidation` says they changed (Redis pub/sub, or in-process listeners) and on
a timer as a safety net; a key that can no longer be used is dropped at once, before the reload.

Redis or embedded is decided once, at start-up (`redis_url`): with Redis, quota counters and
the usage buffer are in Redis, invalidations come by pub/sub and usage events Redis refused
wait in `spill`; embedded, both live in this process (MemoryQuotaStore, LocalUsageWriter).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import aiohttp
from django.conf import settings
from django.db import connections

from controlplane import invalidation
from gateway import quotas
from gateway.snapshot import (
    KeyEntry,
    KeySnapshot,
    QuotaSnapshot,
    RouteSnapshot,
    load_keys,
    load_quotas,
    load_routes,
)
from metering import buffer as metering

logger = logging.getLogger(__name__)
T = TypeVar("T")


class GatewayState:
    def __init__(self) -> None:
        self.keys = KeySnapshot()
        self.routes = RouteSnapshot()
        self.quota_limits = QuotaSnapshot()
        self.session: aiohttp.ClientSession | None = None
        self.store: quotas.QuotaStore | None = None
        self.redis_url = ""  # decided at start-up: "" is the embedded mode
        self.tasks: list[asyncio.Task[None]] = []
        self.stale: dict[str, asyncio.Event] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = False
        self.stopping = False
        self.start_lock: asyncio.Lock | None = None
        self.missing: dict[str, float] = {}  # key prefixes known not to exist, until when
        self.miss_lookups = asyncio.Semaphore(4)
        self.flusher: metering.RedisUsageFlusher | None = None
        self.spill: list[bytes] = []  # usage events Redis refused, retried in the background
        self.instance = os.urandom(4).hex()
        # Every database read of the gateway runs on this one thread: one connection per process.
        self.db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-db")

    async def in_db_thread(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.db_thread, fn, *args)

    # --- start-up and shutdown ----------------------------------------------------------
    async def start_once(self) -> None:
        """For servers without lifespan: start on the first request, once."""
        if self.started:
            return
        if self.start_lock is None:
            self.start_lock = asyncio.Lock()
        async with self.start_lock:
            await self.startup()

    async def startup(self) -> None:
        if self.started:
            return
        self.loop = asyncio.get_running_loop()
        self.stopping = False
        # A Python thread busy with ORM work (snapshot loads, the embedded usage writer) keeps the
        # GIL for a whole switch interval (5 ms by default) each time the event loop wants it
        # back: that showed as milliseconds added to every request. Hand it back sooner.
        if settings.GATEWAY_SWITCH_INTERVAL > 0:
            sys.setswitchinterval(settings.GATEWAY_SWITCH_INTERVAL)
        self.stale = {kind: asyncio.Event() for kind in invalidation.KINDS}
        await asyncio.gather(self.reload("keys"), self.reload("routes"), self.reload("quotas"))
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0,
                # Below uvicorn's 5 s keep-alive in the engine, so a pooled connection is never
                # one the engine is about to close.
                keepalive_timeout=4,
                enable_cleanup_closed=True,
            ),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )
        self.redis_url = settings.REDIS_URL
        if self.redis_url:
            self.store = quotas.RedisQuotaStore(self.redis_url, metering.USAGE_LIST_KEY)
            self.tasks.append(asyncio.create_task(self._subscribe()))
            self.tasks.append(asyncio.create_task(self._retry_spill()))
            if settings.USAGE_FLUSH_IN_PROCESS:
                self.flusher = metering.RedisUsageFlusher()
        else:
            self.store = quotas.MemoryQuotaStore(metering.local_writer().put)
        invalidation.add_local_listener(self._on_local_invalidation)
        for kind in invalidation.KINDS:
            self.tasks.append(asyncio.create_task(self._refresh_loop(kind)))
        self.started = True
        logger.info(
            "gateway %s started: %d keys, %d routed models, %d quotas",
            self.instance,
            len(self.keys.by_prefix),
            len(self.routes.routes),
            len(self.quota_limits.by_scope),
        )

    async def shutdown(self) -> None:
        self.stopping = True
        invalidation.remove_local_listener(self._on_local_invalidation)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        if self.session is not None:
            await self.session.close()
        if self.spill and self.store is not None:
            await self.push_spill()
        if self.flusher is not None:
            await asyncio.to_thread(self.flusher.stop)
            self.flusher = None
        elif not self.redis_url:
            await asyncio.to_thread(metering.local_writer().flush)
        if self.store is not None:
            await self.store.close()
        await self.in_db_thread(connections.close_all)
        self.started = False

    # --- snapshots ----------------------------------------------------------------------
    async def reload(self, kind: str) -> None:
        if kind == "keys":
            self.keys = await self.in_db_thread(load_keys)
            self.missing.clear()
        elif kind == "routes":
            self.routes = await self.in_db_thread(load_routes, self.routes)
        elif kind == "quotas":
            self.quota_limits = await self.in_db_thread(load_quotas)

    async def lookup_missing(self, prefix: str) -> KeyEntry | None:
        """A key newer than the snapshot: one bounded database look-up, then remembered."""
        until = self.missing.get(prefix)
        if until is not None and until > time.monotonic():
            return None
        if self.miss_lookups.locked():
            return None  # a flood of unknown keys must not become a flood of queries
        async with self.miss_lookups:
            snapshot = await self.in_db_thread(load_keys)
        entry = snapshot.by_prefix.get(prefix)
        if entry is None:
            self.missing[prefix] = time.monotonic() + 2
            return None
        self.keys = snapshot
        return entry

    def _on_local_invalidation(self, message: dict[str, Any]) -> None:
        # Called from whichever thread committed the change.
        if self.stopping or self.loop is None or self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.invalidated, message)

    def invalidated(self, message: dict[str, Any]) -> None:
        """(On the event loop.) Mark the snapshot stale; a key that can no longer be used (or
        every key of a suspended tenant) is dropped from it at once, so a revocation takes
        effect in milliseconds, not after a reload that a busy database can slow down."""
        kind = message.get("kind")
        field = {"tenants.ApiKey": "key_id", "tenants.Tenant": "tenant_id"}.get(
            str(message.get("source"))
        )
        if kind == "keys" and message.get("gone") and field and message.get("id") is not None:
            gone = message["id"]
            kept = {p: e for p, e in self.keys.by_prefix.items() if getattr(e, field) != gone}
            if len(kept) != len(self.keys.by_prefix):
                # A request with it now misses the snapshot and is looked up in the
                # database, where it is revoked: 401.
                self.keys = KeySnapshot(by_prefix=kept)
        event = self.stale.get(str(kind))
        if event is not None:
            event.set()

    async def _refresh_loop(self, kind: str) -> None:
        event = self.stale[kind]
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout=settings.GATEWAY_REFRESH_SECONDS)
            event.clear()
            try:
                await self.reload(kind)
            except Exception:
                logger.exception("reloading %s failed; keeping the previous snapshot", kind)
                await asyncio.sleep(1)
                event.set()

    async def _subscribe(self) -> None:
        import redis.asyncio as aioredis

        while True:
            client = aioredis.Redis.from_url(self.redis_url)
            try:
                pubsub = client.pubsub()
                await pubsub.subscribe(invalidation.CHANNEL)
                # Anything may have changed while we were not listening.
                for event in self.stale.values():
                    event.set()
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    try:
                        payload = json.loads(message["data"])
                    except ValueError:
                        continue
                    if isinstance(payload, dict):
                        self.invalidated(payload)
            except asyncio.CancelledError:
                await client.aclose()
                raise
            except Exception:
                logger.warning("invalidation subscription lost; reconnecting", exc_info=True)
                await asyncio.sleep(1)
            finally:
                await client.aclose()

    # --- usage Redis refused ------------------------------------------------------------
    async def _retry_spill(self) -> None:
        while True:
            await asyncio.sleep(1)
            if self.spill:
                await self.push_spill()

    async def push_spill(self) -> None:
        assert self.store is not None
        while self.spill:
            try:
                await self.store.push_usage(self.spill[0])
            except Exception:
                logger.warning(
                    "usage buffer unreachable; %d events held in memory", len(self.spill)
                )
                return
            self.spill.pop(0)
