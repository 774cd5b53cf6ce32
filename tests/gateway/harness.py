"""Engine-free parts for the gateway's unit tests: a fake upstream on an ephemeral port, an
in-process ASGI call, and the rows one routable model needs.

The fake upstream is an aiohttp server in the test's own event loop (a stand-in for vLLM is
fine for proxy behaviour; no engine runs here). The gateway is called as the ASGI server would
call it, without granian."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def completion(prompt_tokens: int = 3, completion_tokens: int = 1) -> dict[str, Any]:
    return {
        "id": "fake",
        "object": "chat.completion",
        "model": "fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class FakeUpstream:
    """An engine stand-in: `handler` answers every POST; `hits` counts them."""

    def __init__(self, handler: Handler, port: int | None = None) -> None:
        self.handler = handler
        self.port = port or free_port()
        self.hits = 0
        self.bodies: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> FakeUpstream:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.hits += 1
            self.bodies.append(await request.json())
            return await self.handler(request)

        app = web.Application()
        app.router.add_post("/{path:.*}", handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    messages: list[dict[str, Any]]

    def json(self) -> Any:
        return json.loads(self.body)


async def call(
    app: Callable[..., Awaitable[None]],
    path: str,
    body: bytes | dict[str, Any] = b"",
    *,
    key: str | None = None,
    method: str = "POST",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Answer:
    """One request through an ASGI app; the client never hangs up."""
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    sent = [(b"content-type", b"application/json")] if headers is None else list(headers)
    if key is not None:
        sent.append((b"authorization", f"Bearer {key}".encode()))
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": sent,
        "client": ("127.0.0.1", 40000),
    }
    delivered = False
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await never.wait()
        return {"type": "http.disconnect"}

    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    return Answer(
        status=start["status"],
        headers={k.decode(): v.decode() for k, v in start["headers"]},
        body=b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body"),
        messages=messages,
    )


@dataclass
class Routed:
    """One tenant with a key for one model served by one ready worker at `port`."""

    tenant: Any
    key: str
    model: Any
    version: Any
    worker: Any


def routed_model(port: int, name: str = "unit-model", **prices: Decimal) -> Routed:
    from models_registry.models import EngineRuntime, Model, ModelGrant, ModelVersion, VersionState
    from nodes.models import Deployment, Node, Worker, WorkerState
    from tenants.models import ApiKey, Tenant

    tenant = Tenant.objects.create(slug=f"{name}-tenant", name="Unit")
    runtime = EngineRuntime.objects.create(name=f"{name}-cpu", version="0.32.0", python_path="/x")
    model = Model.objects.create(name=name)
    version = ModelVersion.objects.create(
        model=model,
        label="v1",
        weights_source="local",
        runtime=runtime,
        state=VersionState.ACTIVE,
        **prices,
    )
    node = Node.objects.create(name=f"{name}-node", address="127.0.0.1")
    deployment = Deployment.objects.create(name=name, model_version=version)
    worker = Worker.objects.create(
        deployment=deployment, node=node, port=port, state=WorkerState.READY
    )
    ModelGrant.objects.create(tenant=tenant, model=model)
    _, key = ApiKey.issue(tenant=tenant, name="unit")
    return Routed(tenant=tenant, key=key, model=model, version=version, worker=worker)


def forget_counters(tenant_id: int) -> None:
    """Tenant ids restart with each test database; Redis counters outlive it."""
    from django.conf import settings

    if not settings.REDIS_URL:
        return
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(f"cpq:t{tenant_id}:*"):
        client.delete(key)
    client.close()
