"""The gateway: a lean ASGI application for `/v1/` (and `/metrics`).

No Django request machinery on the hot path: keys, routes and quotas come from in-memory
snapshots (snapshot.py) refreshed in threads; admission is one Redis round trip (quotas.py);
the engine is reached through one shared aiohttp session; and the usage event rides the
settlement round trip into the metering buffer (metering/buffer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from ipaddress import ip_address
from typing import Any, TypeVar

import aiohttp
from django.conf import settings
from django.db import connections

from controlplane import invalidation
from gateway import errors, metrics, quotas
from gateway.errors import GatewayError
from gateway.snapshot import (
    COST_UNIT,
    DeploymentRoute,
    KeyEntry,
    KeySnapshot,
    ModelEntry,
    QuotaSnapshot,
    RouteSnapshot,
    Upstream,
    load_keys,
    load_quotas,
    load_routes,
)
from metering import buffer as metering
from tenants import keys as key_format

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
T = TypeVar("T")

ENDPOINTS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
JSON = b"application/json"
# Larger than any model's context; what a 32-bit engine field and the quota counters hold.
MAX_TOKENS_LIMIT = 2**31 - 1
USAGE_MARK = b'"usage":{'


@dataclass
class Outcome:
    """What the metering and the metrics need to know about one request."""

    status: str = "ok"
    http_status: int = 200
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    sent_completion_tokens: int | None = None
    usage_counted: bool = False
    ttft: float | None = None
    upstream: Upstream | None = None
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    receive: Receive | None = None


def _usage_numbers(usage: Any) -> tuple[int, int, int] | None:
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return (
        int(usage.get("prompt_tokens") or 0),
        int(cached or 0),
        int(usage.get("completion_tokens") or 0),
    )


class Gateway:
    def __init__(self) -> None:
        self.keys = KeySnapshot()
        self.routes = RouteSnapshot()
        self.quota_limits = QuotaSnapshot()
        self.session: aiohttp.ClientSession | None = None
        self.store: quotas.QuotaStore | None = None
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
        self.max_body = settings.GATEWAY_MAX_BODY_BYTES
        self.default_max_tokens = settings.GATEWAY_DEFAULT_MAX_TOKENS
        self.drain_seconds = settings.GATEWAY_DISCONNECT_DRAIN_SECONDS
        # Every database read of the gateway runs on this one thread: one connection per process.
        self.db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-db")

    async def in_db_thread(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.db_thread, fn, *args)

    # --- lifecycle --------------------------------------------------------------------
    async def startup(self) -> None:
        if self.started:
            return
        self.loop = asyncio.get_running_loop()
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
        if settings.REDIS_URL:
            self.store = quotas.RedisQuotaStore(settings.REDIS_URL, metering.USAGE_LIST_KEY)
            self.tasks.append(asyncio.create_task(self._subscribe()))
            self.tasks.append(asyncio.create_task(self._retry_spill()))
            if settings.USAGE_FLUSH_IN_PROCESS:
                self.flusher = metering.RedisUsageFlusher()
        else:
            writer = metering.local_writer()
            self.store = quotas.MemoryQuotaStore(writer.put)
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
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        if self.session is not None:
            await self.session.close()
        if self.spill and self.store is not None:
            await self._push_spill()
        if self.flusher is not None:
            await asyncio.to_thread(self.flusher.stop)
        elif not settings.REDIS_URL:
            await asyncio.to_thread(metering.local_writer().flush)
        if self.store is not None:
            await self.store.close()
        await self.in_db_thread(connections.close_all)
        self.started = False

    async def reload(self, kind: str) -> None:
        if kind == "keys":
            self.keys = await self.in_db_thread(load_keys)
            self.missing.clear()
        elif kind == "routes":
            self.routes = await self.in_db_thread(load_routes, self.routes)
        elif kind == "quotas":
            self.quota_limits = await self.in_db_thread(load_quotas)

    def _on_local_invalidation(self, message: dict[str, Any]) -> None:
        # Called from whichever thread committed the change.
        if self.stopping or self.loop is None or self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self._invalidated, message)

    def _invalidated(self, message: dict[str, Any]) -> None:
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
            client = aioredis.Redis.from_url(settings.REDIS_URL)
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
                        self._invalidated(payload)
            except asyncio.CancelledError:
                await client.aclose()
                raise
            except Exception:
                logger.warning("invalidation subscription lost; reconnecting", exc_info=True)
                await asyncio.sleep(1)
            finally:
                await client.aclose()

    async def _retry_spill(self) -> None:
        while True:
            await asyncio.sleep(1)
            if self.spill:
                await self._push_spill()

    async def _push_spill(self) -> None:
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

    # --- ASGI -------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if not self.started:
            # Servers without lifespan: start on the first request, once.
            if self.start_lock is None:
                self.start_lock = asyncio.Lock()
            async with self.start_lock:
                await self.startup()
        request_id = "req_" + os.urandom(12).hex()
        try:
            path = scope["path"]
            if path == "/metrics":
                await self._metrics(scope, send, request_id)
            elif path in ENDPOINTS:
                if scope["method"] != "POST":
                    raise GatewayError(405, f"Use POST for {path}.", code="method_not_allowed")
                await self._inference(scope, receive, send, request_id, ENDPOINTS[path])
            elif path == "/v1/models" or path.startswith("/v1/models/"):
                if scope["method"] != "GET":
                    raise GatewayError(405, f"Use GET for {path}.", code="method_not_allowed")
                await self._models(scope, send, request_id, path[len("/v1/models/") :] or None)
            else:
                raise GatewayError(404, f"Unknown path {path}.", code="unknown_url")
        except GatewayError as exc:
            await self._respond(send, exc.status, exc.body(), request_id, exc.headers)
        except Exception:
            logger.exception("gateway request %s failed", request_id)
            await self._respond(
                send, 500, errors.error_body("Internal error.", "api_error", None, None), request_id
            )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("gateway start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _respond(
        self,
        send: Send,
        status: int,
        body: bytes,
        request_id: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        content_type: bytes = JSON,
    ) -> None:
        all_headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
        ]
        if headers:
            all_headers += headers
        try:
            await send({"type": "http.response.start", "status": status, "headers": all_headers})
            await send({"type": "http.response.body", "body": body})
        except Exception:  # the client left; nothing more to tell it
            logger.debug("client gone before response %s", request_id)

    # --- pieces of a request ----------------------------------------------------------
    def _header(self, scope: Scope, name: bytes) -> bytes | None:
        for key, value in scope["headers"]:
            if key == name:
                return bytes(value)
        return None

    async def _authenticate(self, scope: Scope) -> KeyEntry:
        sent = [value for key, value in scope["headers"] if key == b"authorization"]
        if len(sent) > 1:
            # Which one counts would depend on who reads it (a proxy, us): refuse both.
            raise errors.unauthorized("Send exactly one Authorization header.")
        raw = bytes(sent[0]) if sent else None
        if not raw:
            raise errors.unauthorized(
                "You didn't provide an API key. Send it as `Authorization: Bearer <key>`."
            )
        scheme, _, token = raw.decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not key_format.looks_like(
            token, key_format.API_KEY_MARKER
        ):
            raise errors.unauthorized("Incorrect API key provided.")
        prefix = key_format.prefix_of(token, key_format.API_KEY_MARKER)
        entry = self.keys.by_prefix.get(prefix)
        if entry is None:
            entry = await self._lookup_missing(prefix)
        if entry is None or not key_format.matches(token, entry.hashed):
            raise errors.unauthorized("Incorrect API key provided.")
        if entry.expires_at is not None and entry.expires_at <= time.time():
            raise errors.unauthorized("This API key has expired.")
        return entry

    async def _lookup_missing(self, prefix: str) -> KeyEntry | None:
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

    def _check_content_type(self, scope: Scope) -> None:
        """JSON, or no Content-Type at all: what the engines (FastAPI) parse as JSON too.

        Anything else (a form, text/plain) was parsed as JSON regardless; now it is a 415.
        """
        raw = self._header(scope, b"content-type")
        if raw is None:
            return
        media_type = raw.split(b";", 1)[0].strip().lower()
        if media_type == JSON or (
            media_type.startswith(b"application/") and media_type.endswith(b"+json")
        ):
            return
        raise GatewayError(
            415,
            "Send the request body as JSON, with `Content-Type: application/json`.",
            code="unsupported_media_type",
        )

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        length = self._header(scope, b"content-length")
        too_large = length is not None and length.isdigit() and int(length) > self.max_body
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionResetError("client disconnected while sending the body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                too_large = True
            if not too_large:
                chunks.append(chunk)
            # An oversized body is read (and dropped) up to a bound before the 413, so that
            # clients still sending see the answer rather than a reset connection.
            if not message.get("more_body") or size > 4 * self.max_body:
                break
        if too_large:
            raise GatewayError(
                413,
                f"Request body is over the limit of {self.max_body} bytes.",
                code="request_too_large",
            )
        return b"".join(chunks)

    @staticmethod
    def _parse(body: bytes, endpoint: str) -> dict[str, Any]:
        try:
            # UTF-8 only (RFC 8259), as the engines expect; json.loads(bytes) would also guess
            # UTF-16 and UTF-32.
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise errors.bad_request(f"The request body is not valid UTF-8: {exc}") from exc
        try:
            payload = json.loads(text)
        except ValueError as exc:
            raise errors.bad_request(f"The request body is not valid JSON: {exc}") from exc
        except RecursionError as exc:  # `[[[[…` nested deeper than the parser goes: was a 500
            raise errors.bad_request("The request body is nested too deeply.") from exc
        if not isinstance(payload, dict):
            raise errors.bad_request("The request body must be a JSON object.")
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise errors.bad_request("`model` is required and must be a string.", "model")
        stream = payload.get("stream", False)
        if stream is not None and not isinstance(stream, bool):
            raise errors.bad_request("`stream` must be true or false.", "stream")
        for name in ("max_tokens", "max_completion_tokens"):
            value = payload.get(name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int)
                or not 1 <= value <= MAX_TOKENS_LIMIT
            ):
                # Bounded: a 100-digit number is no model's context, and quota counters (Redis
                # integers) and engines (64-bit) cannot hold it.
                raise errors.bad_request(
                    f"`{name}` must be a positive integer of at most {MAX_TOKENS_LIMIT}.", name
                )
        options = payload.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise errors.bad_request("`stream_options` must be an object.", "stream_options")
        if options and not stream:
            raise errors.bad_request(
                "`stream_options` is only allowed when `stream` is true.", "stream_options"
            )
        user = payload.get("user")
        if user is not None and not isinstance(user, str):
            raise errors.bad_request("`user` must be a string.", "user")
        if endpoint == "embeddings" and stream:
            raise errors.bad_request("Embeddings cannot be streamed.", "stream")
        return payload

    def _pick(self, deployments: tuple[DeploymentRoute, ...], exclude: set[int]) -> Upstream | None:
        """A deployment by traffic weight, then its worker with the fewest requests in flight."""
        candidates = [
            (d, [u for u in d.upstreams if u.worker_id not in exclude]) for d in deployments
        ]
        candidates = [(d, ups) for d, ups in candidates if ups]
        if not candidates:
            return None
        if len(candidates) == 1:
            ups = candidates[0][1]
        else:
            total = sum(d.weight for d, _ in candidates)
            point = random.random() * total
            for d, ups in candidates:  # noqa: B007 - ups is used after the loop
                point -= d.weight
                if point < 0:
                    break
        if len(ups) == 1:
            return ups[0]
        least = min(u.outstanding for u in ups)
        return random.choice([u for u in ups if u.outstanding == least])

    # --- endpoints --------------------------------------------------------------------
    async def _metrics(self, scope: Scope, send: Send, request_id: str) -> None:
        token = settings.GATEWAY_METRICS_TOKEN
        if token:
            if self._header(scope, b"authorization") != f"Bearer {token}".encode():
                raise GatewayError(401, "This needs the metrics token.", code="invalid_api_key")
        else:
            client = (scope.get("client") or ("", 0))[0]
            try:
                allowed = ip_address(client).is_private or ip_address(client).is_loopback
            except ValueError:
                allowed = False
            if not allowed:
                raise GatewayError(404, "Unknown path /metrics.", code="unknown_url")
        body, content_type = await self.in_db_thread(metrics.render)
        await self._respond(send, 200, body, request_id, content_type=content_type.encode())

    async def _models(self, scope: Scope, send: Send, request_id: str, one: str | None) -> None:
        entry = await self._authenticate(scope)
        known = self.routes.models

        def item(m: ModelEntry) -> dict[str, Any]:
            return {
                "id": m.name,
                "object": "model",
                "created": m.created,
                "owned_by": "controlplane",
            }

        if one is not None:
            model = known.get(one)
            if model is None or one not in entry.models:
                raise errors.model_not_found(one)
            body = json.dumps(item(model)).encode()
        else:
            data = [item(known[name]) for name in sorted(entry.models) if name in known]
            body = json.dumps({"object": "list", "data": data}).encode()
        await self._respond(send, 200, body, request_id)

    async def _inference(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, endpoint: str
    ) -> None:
        started = time.monotonic()
        created_at = time.time()
        entry = await self._authenticate(scope)
        outcome = Outcome(receive=receive)
        model: ModelEntry | None = None
        stream = False
        admission: quotas.Admission | None = None
        reserve_tokens = reserve_cost = 0
        metrics.IN_FLIGHT.inc()
        try:
            try:
                self._check_content_type(scope)
                body = await self._read_body(scope, receive)
                payload = self._parse(body, endpoint)
                name = payload["model"]
                model = self.routes.models.get(name)
                if model is None or name not in entry.models:
                    model = None
                    raise errors.model_not_found(name)
                deployments = self.routes.routes.get(name)
                if not deployments:
                    raise errors.no_ready_worker(name)
                stream = bool(payload.get("stream"))

                # Quotas: reserve the worst case, settle later to the real count.
                applicable = quotas.applicable(
                    self.quota_limits, entry.tenant_id, entry.key_id, model.model_id
                )
                if applicable:
                    limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
                    reserve_tokens = quotas.prompt_token_bound(payload, endpoint) + (
                        0 if endpoint == "embeddings" else int(limit or self.default_max_tokens)
                    )
                    dearest = max(
                        (u.max_price_per_token for d in deployments for u in d.upstreams),
                        default=Decimal(0),
                    )
                    reserve_cost = int(dearest * reserve_tokens / COST_UNIT)
                    now = time.time()
                    checks = quotas.build_checks(
                        applicable,
                        tenant_id=entry.tenant_id,
                        key_id=entry.key_id,
                        model_id=model.model_id,
                        reserve_tokens=reserve_tokens,
                        reserve_cost=reserve_cost,
                        now=now,
                    )
                    assert self.store is not None
                    admission = await quotas.admit(
                        self.store,
                        request_id,
                        checks,
                        now=now,
                        rate_limits_when_down=settings.GATEWAY_RATE_LIMITS_WHEN_REDIS_DOWN,
                        budgets_when_down=settings.GATEWAY_BUDGETS_WHEN_REDIS_DOWN,
                    )
                    outcome.extra_headers = self._ratelimit_headers(admission, now)
                    if not admission.allowed:
                        self._refuse(admission, now)

                upstream_body = self._upstream_payload(payload, endpoint, entry, stream)
                await self._proxy(
                    send,
                    request_id,
                    endpoint,
                    deployments,
                    upstream_body,
                    payload,
                    stream,
                    entry.engine_priority,
                    outcome,
                    started,
                )
            except GatewayError as exc:
                outcome.status = "client_error" if exc.status < 500 else "engine_error"
                outcome.http_status = exc.status
                await self._respond(
                    send, exc.status, exc.body(), request_id, exc.headers + outcome.extra_headers
                )
            except ConnectionResetError:
                outcome.status = "client_disconnected"
                outcome.http_status = 499
        finally:
            metrics.IN_FLIGHT.dec()
            await self._finish(
                request_id,
                endpoint,
                entry,
                model,
                stream,
                admission,
                reserve_tokens,
                reserve_cost,
                outcome,
                started,
                created_at,
            )

    def _refuse(self, admission: quotas.Admission, now: float) -> None:
        if admission.unavailable:
            raise GatewayError(
                503,
                "Quotas cannot be checked right now; retry shortly.",
                type="service_unavailable",
                code="quota_unavailable",
                headers=[(b"retry-after", b"1")],
            )
        check = admission.refused
        assert check is not None
        metrics.QUOTA_REFUSALS.labels(check.kind).inc()
        retry_after = max(int(check.reset_at - now + 0.999), 1)
        if check.increment > check.limit:
            detail = f"this request needs {check.increment}, more than the limit of {check.limit}"
        else:
            detail = f"used {admission.used} of {check.limit}"
        raise GatewayError(
            429,
            f"Rate limit reached for {check.kind.replace('_', ' ')}: {detail}. "
            f"Retry after {retry_after}s.",
            type="rate_limit_error" if not check.budget else "insufficient_quota",
            code="rate_limit_exceeded" if not check.budget else "quota_exceeded",
            headers=[(b"retry-after", str(retry_after).encode())],
        )

    @staticmethod
    def _ratelimit_headers(admission: quotas.Admission, now: float) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = []
        for name, window in (("requests", admission.requests), ("tokens", admission.tokens)):
            if window is None:
                continue
            limit, remaining, reset_at = window
            headers += [
                (f"x-ratelimit-limit-{name}".encode(), str(limit).encode()),
                (f"x-ratelimit-remaining-{name}".encode(), str(remaining).encode()),
                (
                    f"x-ratelimit-reset-{name}".encode(),
                    quotas.format_reset(reset_at - now).encode(),
                ),
            ]
        return headers

    def _upstream_payload(
        self, payload: dict[str, Any], endpoint: str, entry: KeyEntry, stream: bool
    ) -> dict[str, Any]:
        body = dict(payload)
        if stream:
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            body["stream_options"] = options
        if endpoint != "embeddings":
            # Each tenant's prompts warm only its own prefix cache.
            body["cache_salt"] = entry.cache_salt
        return body

    async def _proxy(
        self,
        send: Send,
        request_id: str,
        endpoint: str,
        deployments: tuple[DeploymentRoute, ...],
        body: dict[str, Any],
        payload: dict[str, Any],
        stream: bool,
        priority: int,
        outcome: Outcome,
        started: float,
    ) -> None:
        assert self.session is not None
        path = {
            "chat.completions": "/v1/chat/completions",
            "completions": "/v1/completions",
            "embeddings": "/v1/embeddings",
        }[endpoint]
        tried: set[int] = set()
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=settings.GATEWAY_UPSTREAM_CONNECT_TIMEOUT,
            sock_read=settings.GATEWAY_UPSTREAM_READ_TIMEOUT,
        )
        client_wants_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        for attempt in range(2):
            upstream = self._pick(deployments, tried)
            if upstream is None:
                if attempt == 0:
                    raise errors.no_ready_worker(body["model"])
                break
            tried.add(upstream.worker_id)
            outcome.upstream = upstream
            data = body
            if upstream.priority_scheduling and endpoint != "embeddings":
                data = dict(body, priority=priority)
            encoded = json.dumps(data).encode()
            headers = {
                "Authorization": upstream.auth_header,
                "Content-Type": "application/json",
                "X-Request-Id": request_id,
            }
            upstream.outstanding += 1
            try:
                try:
                    response = await self.session.post(
                        upstream.base_url + path, data=encoded, headers=headers, timeout=timeout
                    )
                except aiohttp.ClientConnectorError as exc:
                    # Nothing reached the engine, so another worker may safely take it.
                    logger.warning(
                        "worker %s unreachable (%s); %s",
                        upstream.worker_id,
                        exc,
                        "retrying elsewhere" if attempt == 0 else "giving up",
                    )
                    continue
                except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                    raise errors.gateway_timeout("The engine did not answer in time.") from exc
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                    # The connection dropped before any answer: a pooled keep-alive
                    # connection to an engine that just died (kill -9 showed it). The client
                    # has seen nothing and nothing is billed, so another worker takes it.
                    if attempt == 0:
                        logger.warning(
                            "worker %s dropped the connection before answering (%s); "
                            "retrying elsewhere",
                            upstream.worker_id,
                            exc.__class__.__name__,
                        )
                        continue
                    raise errors.bad_gateway(
                        f"The engine failed: {exc.__class__.__name__}."
                    ) from exc
                except aiohttp.ClientError as exc:
                    raise errors.bad_gateway(
                        f"The engine failed: {exc.__class__.__name__}."
                    ) from exc
                try:
                    await self._relay(
                        send,
                        request_id,
                        response,
                        stream,
                        client_wants_usage,
                        endpoint == "chat.completions",
                        outcome,
                        started,
                    )
                finally:
                    response.release()
                return
            finally:
                upstream.outstanding -= 1
        raise errors.bad_gateway("No worker of this model could be reached.")

    async def _relay(
        self,
        send: Send,
        request_id: str,
        response: aiohttp.ClientResponse,
        stream: bool,
        client_wants_usage: bool,
        is_chat: bool,
        outcome: Outcome,
        started: float,
    ) -> None:
        status = response.status
        if status in (401, 403, 404) or status >= 500:
            # 401/403: our worker key was refused; 404: the engine does not serve this name.
            # Either way the fault is ours or the engine's, never the client's.
            text = (await response.read())[:500].decode("utf-8", "replace")
            logger.warning(
                "worker %s answered %s: %s",
                outcome.upstream.worker_id if outcome.upstream else "?",
                status,
                text,
            )
            raise errors.bad_gateway(f"The engine failed (status {status}).")
        headers = [*outcome.extra_headers, (b"x-request-id", request_id.encode())]
        content_type = response.headers.get("Content-Type", "application/json").encode()
        if not stream or status != 200 or not content_type.startswith(b"text/event-stream"):
            try:
                data = await response.read()
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                raise errors.gateway_timeout("The engine did not answer in time.") from exc
            except aiohttp.ClientError as exc:
                raise errors.bad_gateway(f"The engine failed: {exc.__class__.__name__}.") from exc
            outcome.http_status = status
            if status == 200:
                try:
                    numbers = _usage_numbers(json.loads(data).get("usage"))
                except (ValueError, AttributeError):
                    numbers = None
                if numbers:
                    outcome.prompt_tokens, outcome.cached_tokens, outcome.completion_tokens = (
                        numbers
                    )
            else:
                outcome.status = "client_error"
            try:
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [
                            (b"content-type", content_type),
                            (b"content-length", str(len(data)).encode()),
                            *headers,
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": data})
            except Exception:
                outcome.status = "client_disconnected"
            return
        await self._relay_stream(
            send, response, headers, content_type, client_wants_usage, is_chat, outcome, started
        )

    async def _relay_stream(
        self,
        send: Send,
        response: aiohttp.ClientResponse,
        headers: list[tuple[bytes, bytes]],
        content_type: bytes,
        client_wants_usage: bool,
        is_chat: bool,
        outcome: Outcome,
        started: float,
    ) -> None:
        """Pass SSE bytes through as they come; find (and, unless asked for, strip) the usage."""
        outcome.http_status = 200
        connected = True
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", content_type),
                        (b"cache-control", b"no-cache"),
                        *headers,
                    ],
                }
            )
        except Exception:
            connected = False
        pending = b""
        events_received = 0
        events_sent = 0
        usage: tuple[int, int, int] | None = None
        drain_deadline: float | None = None if connected else time.monotonic() + self.drain_seconds
        finished = False
        # Servers may drop writes to a gone client silently: ASGI's http.disconnect says so.
        watcher = asyncio.ensure_future(outcome.receive()) if outcome.receive else None
        try:
            async for data in response.content.iter_any():
                if pending:
                    data = pending + data
                    pending = b""
                end = data.rfind(b"\n\n")
                if end < 0:
                    pending = data
                    continue
                if end + 2 < len(data):
                    pending = data[end + 2 :]
                    data = data[: end + 2]
                if USAGE_MARK in data:
                    data, found = self._take_usage(data, strip=not client_wants_usage)
                    usage = found or usage
                count = data.count(b"data: {")
                events_received += count
                if connected and watcher is not None and watcher.done():
                    if watcher.result().get("type") == "http.disconnect":
                        connected = False
                        drain_deadline = time.monotonic() + self.drain_seconds
                    else:  # a late empty body message: keep listening
                        assert outcome.receive is not None
                        watcher = asyncio.ensure_future(outcome.receive())
                if connected:
                    if outcome.ttft is None:
                        outcome.ttft = time.monotonic() - started
                    try:
                        await send({"type": "http.response.body", "body": data, "more_body": True})
                        events_sent += count
                    except Exception:
                        connected = False
                        drain_deadline = time.monotonic() + self.drain_seconds
                if not connected and (drain_deadline is None or time.monotonic() > drain_deadline):
                    break
            else:
                finished = True
        except (TimeoutError, aiohttp.ServerTimeoutError):
            outcome.status, outcome.http_status = "engine_error", 504
        except aiohttp.ClientError:
            outcome.status, outcome.http_status = "engine_error", 502
        finally:
            if watcher is not None and not watcher.done():
                watcher.cancel()
        if connected:
            # The engine stopped mid-stream (it died, or timed out): end with an error event,
            # which OpenAI clients raise as an error, instead of a silent early end that reads
            # as a complete answer.
            tail = b""
            if outcome.status == "engine_error":
                message = (
                    "The engine stopped answering mid-stream."
                    if outcome.http_status == 502
                    else "The engine did not answer in time."
                )
                # (A partial event left in `pending` is dropped: it would not parse.)
                body = errors.error_body(message, "api_error", "engine_failed", None)
                tail = b"data: " + body + b"\n\n"
            try:
                await send({"type": "http.response.body", "body": tail, "more_body": False})
            except Exception:
                connected = False
        if not connected:
            outcome.status = "client_disconnected"
        if usage is not None:
            outcome.prompt_tokens, outcome.cached_tokens, outcome.completion_tokens = usage
        else:
            # The engine's usage never arrived (aborted stream): count the chunks it sent. Each
            # vLLM chunk carries one token, except chat's first chunk (the role, no token).
            outcome.usage_counted = True
            outcome.completion_tokens = max(events_received - is_chat, 0)
        if not connected or not finished:
            delivered = max(events_sent - is_chat, 0)
            outcome.sent_completion_tokens = (
                min(delivered, outcome.completion_tokens) if usage else delivered
            )

    @staticmethod
    def _take_usage(data: bytes, strip: bool) -> tuple[bytes, tuple[int, int, int] | None]:
        """Find the engine's usage chunk (`"choices":[]` with `usage`) in a block of events."""
        kept = []
        found = None
        for event in data.split(b"\n\n"):
            if not event:
                continue
            if USAGE_MARK in event and event.startswith(b"data: {"):
                try:
                    chunk = json.loads(event[6:])
                except ValueError:
                    chunk = None
                if isinstance(chunk, dict) and chunk.get("usage") and not chunk.get("choices"):
                    found = _usage_numbers(chunk["usage"])
                    if strip:
                        continue
            kept.append(event)
        return (b"\n\n".join(kept) + b"\n\n" if kept else b""), found

    async def _finish(
        self,
        request_id: str,
        endpoint: str,
        entry: KeyEntry,
        model: ModelEntry | None,
        stream: bool,
        admission: quotas.Admission | None,
        reserve_tokens: int,
        reserve_cost: int,
        outcome: Outcome,
        started: float,
        created_at: float,
    ) -> None:
        elapsed = time.monotonic() - started
        upstream = outcome.upstream
        cost = (
            upstream.cost(outcome.prompt_tokens, outcome.cached_tokens, outcome.completion_tokens)
            if upstream
            else Decimal(0)
        )
        event = {
            "request_id": request_id,
            "tenant_id": entry.tenant_id,
            "api_key_id": entry.key_id,
            "model_id": model.model_id if model else None,
            "model_version_id": upstream.version_id if upstream else None,
            "worker_id": upstream.worker_id if upstream else None,
            "endpoint": endpoint,
            "streamed": stream,
            "prompt_tokens": outcome.prompt_tokens,
            "cached_tokens": outcome.cached_tokens,
            "completion_tokens": outcome.completion_tokens,
            "sent_completion_tokens": outcome.sent_completion_tokens,
            "usage_counted": outcome.usage_counted,
            "latency_ms": int(elapsed * 1000),
            "ttft_ms": int(outcome.ttft * 1000) if outcome.ttft is not None else None,
            "status": outcome.status,
            "http_status": outcome.http_status,
            "created_at": created_at,
        }
        usage = metering.encode(event)
        assert self.store is not None
        checks: list[quotas.Check] = admission.checks if admission and admission.allowed else []
        tokens = outcome.prompt_tokens + outcome.completion_tokens
        deltas = quotas.settlement_deltas(
            checks, reserve_tokens, reserve_cost, tokens, int(cost / COST_UNIT)
        )
        try:
            await self.store.settle(request_id, checks, deltas, usage)
        except Exception:
            # Once per outage with the cause; the spill's retry loop reports the backlog.
            logger.log(
                logging.WARNING if not self.spill else logging.DEBUG,
                "settling %s failed; its usage is held for retry",
                request_id,
                exc_info=not self.spill,
            )
            self.spill.append(usage)

        model_name = model.name if model else "-"
        tenant = entry.tenant_slug
        metrics.REQUESTS.labels(tenant, model_name, str(outcome.http_status)).inc()
        if model is not None:
            if outcome.prompt_tokens:
                metrics.PROMPT_TOKENS.labels(tenant, model_name).inc(outcome.prompt_tokens)
            if outcome.cached_tokens:
                metrics.CACHED_TOKENS.labels(tenant, model_name).inc(outcome.cached_tokens)
            if outcome.completion_tokens:
                metrics.COMPLETION_TOKENS.labels(tenant, model_name).inc(outcome.completion_tokens)
            if cost:
                metrics.COST.labels(tenant, model_name).inc(float(cost))
            metrics.DURATION.labels(model_name).observe(elapsed)
            if outcome.ttft is not None:
                metrics.TTFT.labels(model_name).observe(outcome.ttft)
