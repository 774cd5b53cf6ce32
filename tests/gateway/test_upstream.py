"""Worker picking, the retry policy and relaying, without an engine: fake upstreams (aiohttp
servers in the test's loop) answer, fail, or drop the connection."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway import upstream
from gateway.context import RequestContext
from gateway.errors import GatewayError
from gateway.request import parse
from gateway.snapshot import DeploymentRoute, KeyEntry, Upstream
from models_registry.pricing import Prices
from tests.gateway.harness import FakeUpstream, completion, free_port

KEY = KeyEntry(1, "p", "h", 2, "acme", None, frozenset({"m"}), 0, "tenant-salt")
FREE = Prices(Decimal(0), Decimal(0), Decimal(0))


def worker(worker_id: int, port: int = 1, outstanding: int = 0, priority: bool = False) -> Upstream:
    return Upstream(
        worker_id=worker_id,
        deployment_id=worker_id // 10,
        base_url=f"http://127.0.0.1:{port}",
        auth_header="Bearer w",
        version_id=1,
        priority_scheduling=priority,
        prices=FREE,
        outstanding=outstanding,
    )


def deployment(dep_id: int, weight: int, *workers: Upstream) -> DeploymentRoute:
    return DeploymentRoute(deployment_id=dep_id, weight=weight, upstreams=workers)


# --- picking --------------------------------------------------------------------------------
def test_the_worker_with_the_fewest_requests_in_flight_is_picked() -> None:
    busy, idle = worker(1, outstanding=3), worker(2, outstanding=1)
    assert upstream.Balancer().pick((deployment(1, 1, busy, idle),), set()) is idle


def test_excluded_workers_are_never_picked_and_none_is_left_after_all_were_tried() -> None:
    a, b = worker(1), worker(2)
    routes = (deployment(1, 1, a, b),)
    balancer = upstream.Balancer()
    assert balancer.pick(routes, {1}) is b
    assert balancer.pick(routes, {1, 2}) is None


def test_deployments_are_picked_in_proportion_to_their_traffic_weight() -> None:
    heavy, light = worker(10), worker(20)
    routes = (deployment(1, 3, heavy), deployment(2, 1, light))
    balancer = upstream.Balancer(random.Random(12))
    picks = [balancer.pick(routes, set()) for _ in range(4000)]
    share = picks.count(heavy) / len(picks)
    assert 0.7 < share < 0.8  # 3:1, with room for chance


def test_a_deployment_whose_workers_were_all_tried_gives_way_to_the_other() -> None:
    a, b = worker(10), worker(20)
    routes = (deployment(1, 1000, a), deployment(2, 1, b))
    assert upstream.Balancer().pick(routes, {10}) is b


# --- the body the engine gets ---------------------------------------------------------------
def test_streams_ask_the_engine_for_usage_and_every_prompt_carries_the_tenants_salt() -> None:
    parsed = parse(b'{"model": "m", "stream": true, "stream_options": {"x": 1}}', "completions")
    body = upstream.engine_body(parsed, "completions", KEY)
    assert body["stream_options"] == {"x": 1, "include_usage": True}
    assert body["cache_salt"] == "tenant-salt"
    assert "include_usage" not in parsed.payload["stream_options"]  # the client's is untouched


def test_embeddings_get_no_cache_salt() -> None:
    parsed = parse(b'{"model": "m", "input": "x"}', "embeddings")
    assert "cache_salt" not in upstream.engine_body(parsed, "embeddings", KEY)


# --- the retry policy -----------------------------------------------------------------------
def test_a_connection_dropped_unanswered_is_retried_once_then_a_502() -> None:
    dropped = aiohttp.ServerDisconnectedError()
    assert upstream.retry_or_fail(dropped, attempt=0, worker_id=1) is None
    failure = upstream.retry_or_fail(dropped, attempt=1, worker_id=2)
    assert failure is not None and (failure.status, failure.code) == (502, "engine_error")


def test_a_timeout_is_a_504_and_never_retried() -> None:
    failure = upstream.retry_or_fail(TimeoutError(), attempt=0, worker_id=1)
    assert failure is not None and (failure.status, failure.code) == (504, "engine_timeout")


def test_other_client_errors_are_a_502_and_never_retried() -> None:
    failure = upstream.retry_or_fail(aiohttp.ClientPayloadError("x"), attempt=0, worker_id=1)
    assert failure is not None and failure.status == 502


# --- forwarding, against fake upstreams -----------------------------------------------------
async def _ok(request: web.Request) -> web.StreamResponse:
    return web.json_response(completion(prompt_tokens=4, completion_tokens=2))


async def _fails(request: web.Request) -> web.StreamResponse:
    return web.json_response({"error": {"message": "boom"}}, status=500)


async def _drops(request: web.Request) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.close()
    return web.Response()


async def _dies_mid_stream(request: web.Request) -> web.StreamResponse:
    stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await stream.prepare(request)
    for word in ("one", "two"):
        event = {"choices": [{"index": 0, "delta": {"content": word}}]}
        await stream.write(f"data: {json.dumps(event)}\n\n".encode())
        await asyncio.sleep(0.02)
    assert request.transport is not None
    request.transport.close()
    return stream


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def forward(
    first: Handler | None, second: Handler | None, body: bytes = b'{"model": "m"}'
) -> tuple[RequestContext, list[dict[str, Any]], list[int], GatewayError | None]:
    """Two workers of one deployment; the first (idle) is tried first. None: nothing listens."""
    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    async def main() -> tuple[RequestContext, list[int], GatewayError | None]:
        fakes = [FakeUpstream(h) if h else None for h in (first, second)]
        ports = [f.port if f else free_port() for f in fakes]
        for fake in fakes:
            if fake:
                await fake.__aenter__()
        parsed = parse(body, "chat.completions")
        ctx = RequestContext("req_1", "chat.completions", KEY, time.monotonic(), time.time())
        ctx.stream = parsed.stream
        routes = (deployment(1, 1, worker(1, ports[0]), worker(2, ports[1], outstanding=1)),)
        failure = None
        try:
            async with aiohttp.ClientSession() as session:
                await upstream.forward(
                    ctx, send, session, upstream.Balancer(), routes, parsed, drain_seconds=1
                )
        except GatewayError as exc:
            failure = exc
        finally:
            for fake in fakes:
                if fake:
                    await fake.__aexit__(None, None, None)
        return ctx, [f.hits if f else 0 for f in fakes], failure

    ctx, hits, failure = asyncio.run(main())
    return ctx, messages, hits, failure


def test_a_refused_connection_is_retried_on_another_worker() -> None:
    ctx, messages, hits, failure = forward(None, _ok)
    assert failure is None and hits == [0, 1]
    assert messages[0]["status"] == 200 and ctx.upstream is not None and ctx.upstream.worker_id == 2
    assert (ctx.prompt_tokens, ctx.completion_tokens) == (4, 2)


def test_a_connection_dropped_before_any_answer_is_retried_on_another_worker() -> None:
    _, messages, hits, failure = forward(_drops, _ok)
    assert failure is None and hits == [1, 1] and messages[0]["status"] == 200


def test_an_engine_error_answer_is_a_502_and_never_retried() -> None:
    _, messages, hits, failure = forward(_fails, _ok)
    assert failure is not None and failure.status == 502
    assert hits == [1, 0] and messages == []


def test_a_stream_that_began_is_never_retried_even_when_the_engine_dies() -> None:
    body = b'{"model": "m", "stream": true}'
    ctx, messages, hits, failure = forward(_dies_mid_stream, _ok, body)
    assert failure is None and hits == [1, 0]
    assert (ctx.status, ctx.http_status) == ("engine_error", 502)
    assert b"engine_failed" in messages[-1]["body"]


def test_when_no_worker_can_be_reached_the_answer_is_a_502() -> None:
    _, _, _, failure = forward(None, None)
    assert failure is not None and failure.status == 502
    assert "could be reached" in failure.message


@pytest.mark.parametrize(("priority", "sent"), [(True, True), (False, False)])
def test_the_tenants_priority_goes_only_to_workers_scheduling_by_priority(
    priority: bool, sent: bool
) -> None:
    async def main() -> dict[str, Any]:
        async with FakeUpstream(_ok) as fake, aiohttp.ClientSession() as session:
            parsed = parse(b'{"model": "m"}', "chat.completions")
            ctx = RequestContext("r", "chat.completions", KEY, time.monotonic(), time.time())
            routes = (deployment(1, 1, worker(1, fake.port, priority=priority)),)

            async def send(message: dict[str, Any]) -> None:
                return None

            await upstream.forward(ctx, send, session, upstream.Balancer(), routes, parsed, 1)
            return fake.bodies[0]

    body = asyncio.run(main())
    assert ("priority" in body) is sent and body["cache_salt"] == "tenant-salt"
