"""Real parts for the gateway tests: vLLM engines, the gateway served by granian, a fake engine.

Engines run in their own process groups and are always killed in finalizers. The gateway runs
in a thread of the test process (granian's embedded server), so it uses the test database.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import httpx

from devtools.engine import ENGINE_PYTHON, TINY_MODEL, embedding_model_dir, spawn_engine
from devtools.net import wait_for_port, wait_http
from devtools.processes import stop

# ENGINE_PYTHON, TINY_MODEL and embedding_model_dir are devtools', imported from here by tests.
__all__ = [
    "ENGINE_PYTHON",
    "TINY_MODEL",
    "EmbeddedGateway",
    "Engine",
    "FakeEngine",
    "embedding_model_dir",
    "raw_post",
]


class Engine:
    """A real vLLM engine of the tiny model (or MiniLM), with the project's CPU flags."""

    def __init__(self, model_dir: Path, name: str, port: int, api_key: str, log: Path) -> None:
        self.port = port
        self.api_key = api_key
        self.name = name
        self.log = log
        self.process = spawn_engine(model_dir, name, port, api_key, log)

    def wait_ready(self, timeout: float = 180) -> None:
        url = f"http://127.0.0.1:{self.port}/health"
        wait_http(url, timeout, process=self.process, log=self.log)

    def counters(self) -> dict[str, float]:
        """The engine's own prompt and generation token totals."""
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        totals = {"prompt": 0.0, "generation": 0.0}
        for line in text.splitlines():
            for kind in totals:
                if line.startswith(f"vllm:{kind}_tokens_total{{"):
                    totals[kind] += float(line.rsplit(" ", 1)[1])
        return totals

    def stop(self) -> None:
        stop(self.process, 20)


class EmbeddedGateway:
    """controlplane.asgi.application served by granian in a thread (lifespan included)."""

    def __init__(self, port: int) -> None:
        from granian.constants import Interfaces
        from granian.server.embed import Server

        from controlplane.asgi import application

        self.port = port
        self.server = Server(
            application,
            address="127.0.0.1",
            port=port,
            interface=Interfaces.ASGI,
            log_enabled=False,
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="gateway-server", daemon=True)
        self.thread.start()
        wait_for_port(port, 30)
        if self.error:
            raise self.error

    def _run(self) -> None:
        try:
            self.loop = asyncio.new_event_loop()
            self.loop.run_until_complete(self.server.serve())
        except BaseException as exc:  # reported to the test thread
            self.error = exc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.server.stop)
        self.thread.join(30)


class FakeEngine:
    """An engine stand-in for proxy-only behaviours: fails, hangs, or answers, by model name."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.hits: dict[int, int] = {p: 0 for p in ports}
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        from aiohttp import web

        async def handle(request: web.Request) -> web.StreamResponse:
            port = request.url.port or 0
            self.hits[port] = self.hits.get(port, 0) + 1
            body = await request.json()
            model = body["model"]
            if model.endswith("-500"):
                return web.json_response({"error": {"message": "boom"}}, status=500)
            if model.endswith("-slow"):
                await asyncio.sleep(5)
            if model.endswith("-drop") and port == self.ports[-1]:
                # The connection drops before any answer: an engine that just died.
                assert request.transport is not None
                request.transport.close()
                return web.Response()
            if model.endswith("-die"):
                # Two chunks of a stream, then the connection drops: an engine killed mid-way.
                stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await stream.prepare(request)
                for word in ("one", "two"):
                    chunk = {
                        "id": "fake",
                        "object": "chat.completion.chunk",
                        "model": model,
                        "choices": [{"index": 0, "delta": {"content": word}}],
                    }
                    await stream.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    await asyncio.sleep(0.05)
                assert request.transport is not None
                request.transport.close()
                return stream
            return web.json_response(
                {
                    "id": "fake",
                    "object": "chat.completion",
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "ok"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
                }
            )

        async def main() -> None:
            app = web.Application()
            app.router.add_post("/v1/chat/completions", handle)
            runner = web.AppRunner(app)
            await runner.setup()
            for port in self.ports:
                await web.TCPSite(runner, "127.0.0.1", port).start()
            self.runner = runner
            self.ready.set()

        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(main())
        self.loop.run_forever()

    def stop(self) -> None:
        async def cleanup() -> None:
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def raw_post(
    url: str, body: bytes, key: str | None, timeout: float = 30
) -> tuple[int, httpx.Headers, Any]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    response = httpx.post(url, content=body, headers=headers, timeout=timeout)
    return response.status_code, response.headers, response.json()
