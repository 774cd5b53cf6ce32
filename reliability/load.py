"""Load through both gateways, as products would send it, recording what each client saw.

The clients balance over the two gateways themselves, the way a load balancer in front of them
would: round robin, and a gateway that refuses a connection, or closes it before answering
anything, is skipped for a second while the request goes to the other. Neither is an error a
client sees (the gateway never took the request); anything after an answer began is.

Each request ends as one of:
- `ok`: a complete answer (a stream up to its `[DONE]`);
- `refused`: a 429 with an OpenAI-shaped body (quota scenarios);
- `clean_error`: any other OpenAI-shaped error: an error status with an `{"error": {...}}` body,
  or a stream that ends with an error event;
- `dirty_error`: anything else: a stream cut off without `[DONE]` or an error event, a body that
  is not OpenAI-shaped, a connection reset after the request was sent.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

ERROR_FIELDS = {"message", "type", "param", "code"}


@dataclass
class Outcome:
    gateway: str
    started: float  # wall-clock seconds (time.time()), to compare with the faults' times
    ended: float = 0.0
    request_id: str | None = None
    status: int | None = None
    kind: str = "dirty_error"
    detail: str = ""
    chunks: int = 0
    ttft: float | None = None
    failovers: int = 0

    @property
    def latency(self) -> float:
        return self.ended - self.started


def openai_error(body: Any) -> dict[str, Any] | None:
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) and set(error) >= ERROR_FIELDS else None


@dataclass
class Load:
    gateways: dict[str, str]  # name -> base URL
    key: str
    model: str
    concurrency: int
    stream: bool = True
    max_tokens: int = 32
    outcomes: list[Outcome] = field(default_factory=list)
    stop_at: float | None = None  # wall clock
    limit: int | None = None  # requests in all
    down_until: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._order = itertools.cycle(sorted(self.gateways))
        self._sent = 0

    def _next_gateway(self) -> str | None:
        now = time.monotonic()
        for _ in range(len(self.gateways)):
            name = next(self._order)
            if self.down_until.get(name, 0) <= now:
                return name
        return None

    def _more(self) -> bool:
        if self.limit is not None and self._sent >= self.limit:
            return False
        return self.stop_at is None or time.time() < self.stop_at

    async def run(self) -> list[Outcome]:
        timeout = aiohttp.ClientTimeout(total=300, sock_connect=3)
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await asyncio.gather(*(self._client(session, i) for i in range(self.concurrency)))
        return self.outcomes

    async def _client(self, session: aiohttp.ClientSession, n: int) -> None:
        while self._more():
            self._sent += 1
            outcome = await self.one(session, f"client {n} request {self._sent}")
            self.outcomes.append(outcome)

    async def one(self, session: aiohttp.ClientSession, prompt: str) -> Outcome:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": f"Tell me about {prompt}."}],
            "max_tokens": self.max_tokens,
            # Never stop early: every answer is exactly max_tokens long, a steady load.
            "ignore_eos": True,
        }
        if self.stream:
            body["stream"] = True
        headers = {"Authorization": f"Bearer {self.key}"}
        failovers = 0
        while True:
            name = self._next_gateway()
            if name is None:  # both refuse connections: wait for one to come back
                await asyncio.sleep(0.2)
                failovers += 1
                if failovers > 100:
                    return Outcome("-", time.time(), time.time(), detail="no gateway answers")
                continue
            outcome = Outcome(name, time.time(), failovers=failovers)
            try:
                async with session.post(
                    self.gateways[name] + "/v1/chat/completions", json=body, headers=headers
                ) as response:
                    outcome.request_id = response.headers.get("x-request-id")
                    outcome.status = response.status
                    if response.status == 200 and self.stream:
                        await self._read_stream(response, outcome)
                    else:
                        await self._read_json(response, outcome)
            except aiohttp.ClientConnectorError:
                # Nothing was sent: skip this gateway for a second, as a balancer would.
                self.down_until[name] = time.monotonic() + 1.0
                failovers += 1
                continue
            except aiohttp.ServerDisconnectedError as exc:
                if outcome.status is not None or failovers >= 3:
                    outcome.kind, outcome.detail = "dirty_error", f"ServerDisconnectedError: {exc}"
                    outcome.ended = time.time()
                    return outcome
                # Closed before any answer: a gateway shutting down closes its idle keep-alive
                # connections, and a request sent on one just then was never read. Balancers
                # retry this case elsewhere (HAProxy `retry-on empty-response`); so do we. Were
                # it read after all, the scenario's "tokens metered = engines' counts" and
                # "no duplicates" checks would show the double.
                self.down_until[name] = time.monotonic() + 1.0
                failovers += 1
                continue
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome.kind, outcome.detail = "dirty_error", f"{exc.__class__.__name__}: {exc}"
            outcome.ended = time.time()
            return outcome

    @staticmethod
    async def _read_json(response: aiohttp.ClientResponse, outcome: Outcome) -> None:
        raw = await response.read()
        try:
            body = json.loads(raw)
        except ValueError:
            outcome.kind, outcome.detail = "dirty_error", f"not JSON: {raw[:200]!r}"
            return
        if response.status == 200 and isinstance(body, dict) and body.get("choices"):
            outcome.kind = "ok"
            return
        error = openai_error(body)
        if error is None:
            outcome.kind, outcome.detail = "dirty_error", f"not OpenAI-shaped: {raw[:200]!r}"
        else:
            outcome.kind = "refused" if response.status == 429 else "clean_error"
            outcome.detail = f"{response.status} {error.get('code')}: {error.get('message')}"

    @staticmethod
    async def _read_stream(response: aiohttp.ClientResponse, outcome: Outcome) -> None:
        async for line in response.content:
            if not line.startswith(b"data: "):
                continue
            data = line[6:].strip()
            if data == b"[DONE]":
                outcome.kind = "ok"
                return
            try:
                chunk = json.loads(data)
            except ValueError:
                outcome.kind, outcome.detail = "dirty_error", f"bad event: {data[:200]!r}"
                return
            error = openai_error(chunk)
            if error is not None:
                outcome.kind = "clean_error"
                outcome.detail = f"stream error {error.get('code')}: {error.get('message')}"
                return
            if outcome.ttft is None:
                outcome.ttft = time.time() - outcome.started
            outcome.chunks += 1
        outcome.kind, outcome.detail = "dirty_error", "the stream ended without [DONE]"


def run_load(load: Load, during: Callable[[], Any] | None = None) -> tuple[list[Outcome], Any]:
    """Run the load in an event loop of its own while `during` (the fault) runs here."""
    import threading

    result: dict[str, Any] = {}

    def drive() -> None:
        result["outcomes"] = asyncio.run(load.run())

    thread = threading.Thread(target=drive, name="load", daemon=True)
    thread.start()
    value = during() if during is not None else None
    thread.join()
    return result["outcomes"], value
