"""The gateway: a lean ASGI application for `/v1/` (and `/metrics`).

No Django request machinery on the hot path: keys, routes and quotas come from in-memory
snapshots (state.py, snapshot.py); admission is one Redis round trip (admission.py, quotas.py);
the engine is reached through one shared aiohttp session (upstream.py, sse.py); and the usage
event rides the settlement round trip into the metering buffer (settle.py, metering/buffer.py).

This module dispatches: lifespan, `/metrics`, `/v1/models`, and the inference endpoints, whose
steps (docs/gateway.md, "The way of a request") each live in a module of their own.
"""

from __future__ import annotations

import json
import logging
import os
import time
from ipaddress import ip_address
from typing import Any

from django.conf import settings

from gateway import admission, auth, errors, metrics, request, settle, upstream
from gateway.context import Headers, Receive, RequestContext, Scope, Send
from gateway.errors import GatewayError
from gateway.request import ENDPOINTS, JSON
from gateway.snapshot import ModelEntry
from gateway.state import GatewayState

logger = logging.getLogger(__name__)


class Gateway:
    def __init__(self) -> None:
        self.state = GatewayState()
        self.balancer = upstream.Balancer()
        self.max_body = settings.GATEWAY_MAX_BODY_BYTES
        self.default_max_tokens = settings.GATEWAY_DEFAULT_MAX_TOKENS
        self.drain_seconds = settings.GATEWAY_DISCONNECT_DRAIN_SECONDS

    async def startup(self) -> None:
        await self.state.startup()

    async def shutdown(self) -> None:
        await self.state.shutdown()

    # --- ASGI -------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        await self.state.start_once()
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
            await respond(send, exc.status, exc.body(), request_id, exc.headers)
        except Exception:
            logger.exception("gateway request %s failed", request_id)
            body = errors.error_body("Internal error.", "api_error", None, None)
            await respond(send, 500, body, request_id)

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

    # --- endpoints --------------------------------------------------------------------
    async def _metrics(self, scope: Scope, send: Send, request_id: str) -> None:
        token = settings.GATEWAY_METRICS_TOKEN
        if token:
            sent = request.header(scope["headers"], b"authorization")
            if sent != f"Bearer {token}".encode():
                raise GatewayError(401, "This needs the metrics token.", code="invalid_api_key")
        else:
            client = (scope.get("client") or ("", 0))[0]
            try:
                allowed = ip_address(client).is_private or ip_address(client).is_loopback
            except ValueError:
                allowed = False
            if not allowed:
                raise GatewayError(404, "Unknown path /metrics.", code="unknown_url")
        body, content_type = await self.state.in_db_thread(metrics.render)
        await respond(send, 200, body, request_id, content_type=content_type.encode())

    async def _models(self, scope: Scope, send: Send, request_id: str, one: str | None) -> None:
        entry = await auth.authenticate(
            scope["headers"], self.state.keys, self.state.lookup_missing
        )
        known = self.state.routes.models

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
        await respond(send, 200, body, request_id)

    async def _inference(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, endpoint: str
    ) -> None:
        started, created_at = time.monotonic(), time.time()
        state = self.state
        key = await auth.authenticate(scope["headers"], state.keys, state.lookup_missing)
        ctx = RequestContext(request_id, endpoint, key, started, created_at, receive=receive)
        metrics.IN_FLIGHT.inc()
        try:
            try:
                request.check_content_type(scope["headers"])
                body = await request.read_body(scope["headers"], receive, self.max_body)
                parsed = request.parse(body, endpoint)
                model = state.routes.models.get(parsed.model)
                if model is None or parsed.model not in key.models:
                    raise errors.model_not_found(parsed.model)
                ctx.model = model
                deployments = state.routes.routes.get(parsed.model)
                if not deployments:
                    raise errors.no_ready_worker(parsed.model)
                ctx.stream = parsed.stream
                assert state.store is not None and state.session is not None
                # Quotas: reserve the worst case, settled later to the real count.
                await admission.admit(
                    ctx,
                    parsed,
                    deployments,
                    state.quota_limits,
                    state.store,
                    self.default_max_tokens,
                )
                await upstream.forward(
                    ctx, send, state.session, self.balancer, deployments, parsed, self.drain_seconds
                )
            except GatewayError as exc:
                ctx.fail(exc.status)
                await respond(
                    send, exc.status, exc.body(), request_id, exc.headers + ctx.extra_headers
                )
            except ConnectionResetError:
                ctx.status, ctx.http_status = "client_disconnected", 499
        finally:
            metrics.IN_FLIGHT.dec()
            assert state.store is not None
            await settle.settle(ctx, state.store, state.spill)


async def respond(
    send: Send,
    status: int,
    body: bytes,
    request_id: str,
    headers: Headers | None = None,
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
