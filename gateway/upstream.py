"""The way to the engine: which worker, what body, when to try another, and relaying answers.

- `Balancer.pick`: a deployment at random in proportion to its traffic weight, then its worker
  with the fewest requests in flight from this process.
- `retry_or_fail`: the retry policy. A connection that fails before the engine answered
  (refused, or dropped unanswered: a pooled keep-alive connection to an engine just killed) is
  tried once more on another worker; nothing was billed and the client saw nothing. Once an
  answer has begun it is never retried, so a client never gets two generations.
- `relay`: a plain (JSON) answer is passed on whole; a stream goes to sse.StreamRelay.
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import aiohttp
from django.conf import settings

from gateway import errors
from gateway.context import RequestContext, Send
from gateway.errors import GatewayError
from gateway.request import ENDPOINTS, ParsedRequest
from gateway.snapshot import DeploymentRoute, KeyEntry, Upstream
from gateway.sse import StreamRelay, usage_of

logger = logging.getLogger(__name__)

PATHS = {endpoint: path for path, endpoint in ENDPOINTS.items()}
ATTEMPTS = 2  # the first worker, and one other


class Balancer:
    """Worker picking. `rng` is the source of randomness (a seeded one in tests)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()  # load spreading, not security

    def pick(self, deployments: tuple[DeploymentRoute, ...], exclude: set[int]) -> Upstream | None:
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
            point = self.rng.random() * total
            for d, ups in candidates:  # noqa: B007 - ups is used after the loop
                point -= d.weight
                if point < 0:
                    break
        if len(ups) == 1:
            return ups[0]
        least = min(u.outstanding for u in ups)
        return self.rng.choice([u for u in ups if u.outstanding == least])


def engine_body(parsed: ParsedRequest, endpoint: str, key: KeyEntry) -> dict[str, Any]:
    """The body the engine gets: the client's, plus what metering and isolation need."""
    body = dict(parsed.payload)
    if parsed.stream:
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True  # the usage chunk is what gets billed
        body["stream_options"] = options
    if endpoint != "embeddings":
        # Each tenant's prompts warm only its own prefix cache.
        body["cache_salt"] = key.cache_salt
    return body


def retry_or_fail(exc: BaseException, attempt: int, worker_id: int) -> GatewayError | None:
    """What to do when sending to a worker failed before any answer: None to try another
    worker, or the error to answer with."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        # Nothing reached the engine, so another worker may safely take it.
        logger.warning(
            "worker %s unreachable (%s); %s",
            worker_id,
            exc,
            "retrying elsewhere" if attempt == 0 else "giving up",
        )
        return None
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return errors.gateway_timeout("The engine did not answer in time.")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError) and attempt == 0:
        # The connection dropped before any answer: a pooled keep-alive connection to an
        # engine that just died (kill -9 showed it). The client has seen nothing and nothing is
        # billed, so another worker takes it.
        logger.warning(
            "worker %s dropped the connection before answering (%s); retrying elsewhere",
            worker_id,
            exc.__class__.__name__,
        )
        return None
    return errors.bad_gateway(f"The engine failed: {exc.__class__.__name__}.")


async def forward(
    ctx: RequestContext,
    send: Send,
    session: aiohttp.ClientSession,
    balancer: Balancer,
    deployments: tuple[DeploymentRoute, ...],
    parsed: ParsedRequest,
    drain_seconds: float,
) -> None:
    """Send the request to a worker (a second one if the first could not be reached) and relay
    its answer to the client."""
    body = engine_body(parsed, ctx.endpoint, ctx.key)
    path = PATHS[ctx.endpoint]
    timeout = aiohttp.ClientTimeout(
        total=None,
        sock_connect=settings.GATEWAY_UPSTREAM_CONNECT_TIMEOUT,
        sock_read=settings.GATEWAY_UPSTREAM_READ_TIMEOUT,
    )
    tried: set[int] = set()
    for attempt in range(ATTEMPTS):
        upstream = balancer.pick(deployments, tried)
        if upstream is None:
            if attempt == 0:
                raise errors.no_ready_worker(parsed.model)
            break
        tried.add(upstream.worker_id)
        ctx.upstream = upstream
        data = body
        if upstream.priority_scheduling and ctx.endpoint != "embeddings":
            data = dict(body, priority=ctx.key.engine_priority)
        headers = {
            "Authorization": upstream.auth_header,
            "Content-Type": "application/json",
            "X-Request-Id": ctx.request_id,
        }
        upstream.outstanding += 1
        try:
            try:
                response = await session.post(
                    upstream.base_url + path,
                    data=json.dumps(data).encode(),
                    headers=headers,
                    timeout=timeout,
                )
            except (TimeoutError, aiohttp.ClientError) as exc:
                failure = retry_or_fail(exc, attempt, upstream.worker_id)
                if failure is None:
                    continue
                raise failure from exc
            # An answer has begun: from here on, never another worker.
            try:
                await relay(ctx, send, response, parsed.client_wants_usage, drain_seconds)
            finally:
                response.release()
            return
        finally:
            upstream.outstanding -= 1
    raise errors.bad_gateway("No worker of this model could be reached.")


async def relay(
    ctx: RequestContext,
    send: Send,
    response: aiohttp.ClientResponse,
    client_wants_usage: bool,
    drain_seconds: float,
) -> None:
    status = response.status
    if status in (401, 403, 404) or status >= 500:
        # 401/403: our worker key was refused; 404: the engine does not serve this name.
        # Either way the fault is ours or the engine's, never the client's.
        text = (await response.read())[:500].decode("utf-8", "replace")
        logger.warning(
            "worker %s answered %s: %s",
            ctx.upstream.worker_id if ctx.upstream else "?",
            status,
            text,
        )
        raise errors.bad_gateway(f"The engine failed (status {status}).")
    headers = [*ctx.extra_headers, (b"x-request-id", ctx.request_id.encode())]
    content_type = response.headers.get("Content-Type", "application/json").encode()
    if ctx.stream and status == 200 and content_type.startswith(b"text/event-stream"):
        relay_stream = StreamRelay(
            ctx,
            send,
            response.content.iter_any(),
            headers=headers,
            content_type=content_type,
            client_wants_usage=client_wants_usage,
            drain_seconds=drain_seconds,
        )
        await relay_stream.run()
        return
    try:
        data = await response.read()
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise errors.gateway_timeout("The engine did not answer in time.") from exc
    except aiohttp.ClientError as exc:
        raise errors.bad_gateway(f"The engine failed: {exc.__class__.__name__}.") from exc
    ctx.http_status = status
    if status == 200:
        try:
            usage = usage_of(json.loads(data).get("usage"))
        except (ValueError, AttributeError):
            usage = None
        if usage:
            ctx.prompt_tokens, ctx.cached_tokens, ctx.completion_tokens = usage
    else:
        ctx.status = "client_error"
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
        ctx.status = "client_disconnected"
