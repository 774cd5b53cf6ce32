"""Relaying a streamed (SSE) answer, and finding the engine's token usage in it.

The gateway asks every stream for `stream_options.include_usage`, so the engine ends it with a
usage chunk (`"choices": []` plus `usage`): that is what gets billed. The chunk is stripped
unless the client asked for it itself. Bytes are passed on as they arrive, split only at event
boundaries (a blank line), so a chunk is never cut in two.

A client that hangs up (ASGI `http.disconnect`, or a failed write) stops the writing, not the
reading: the relay keeps reading the engine for `drain_seconds` so the engine's own final usage
arrives. If it does not (the drain ran out, or the engine died), the tokens are counted from the
chunks received: one per vLLM chunk, less chat's first (the role, no token), with
`usage_counted` set. `sent_completion_tokens` is what the client actually got.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import aiohttp

from gateway import errors
from gateway.context import Headers, Message, RequestContext, Send

USAGE_MARK = b'"usage":{'


class Usage(NamedTuple):
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int


def usage_of(usage: Any) -> Usage | None:
    """The counts in an OpenAI `usage` object, or None if it is not one."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return Usage(
        int(usage.get("prompt_tokens") or 0),
        int(cached or 0),
        int(usage.get("completion_tokens") or 0),
    )


def take_usage(data: bytes, strip: bool) -> tuple[bytes, Usage | None]:
    """Find the engine's usage chunk (`"choices":[]` with `usage`) in a block of whole events;
    return the block (without that chunk when `strip`) and the usage found."""
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
                found = usage_of(chunk["usage"])
                if strip:
                    continue
        kept.append(event)
    return (b"\n\n".join(kept) + b"\n\n" if kept else b""), found


class StreamRelay:
    """One streamed answer, from the engine's chunks to the client and the request's counts."""

    def __init__(
        self,
        ctx: RequestContext,
        send: Send,
        chunks: AsyncIterator[bytes],
        *,
        headers: Headers,
        content_type: bytes,
        client_wants_usage: bool,
        drain_seconds: float,
    ) -> None:
        self.ctx = ctx
        self.send = send
        self.chunks = chunks
        self.headers = headers
        self.content_type = content_type
        self.strip_usage = not client_wants_usage
        self.is_chat = ctx.endpoint == "chat.completions"
        self.drain_seconds = drain_seconds
        self.connected = True
        self.pending = b""  # bytes of an event not yet complete
        self.events_received = 0
        self.events_sent = 0
        self.usage: Usage | None = None
        self.drain_deadline: float | None = None  # once the client is gone
        self.finished = False  # the engine ended the stream itself
        self.watcher: asyncio.Future[Message] | None = None

    async def run(self) -> None:
        ctx = self.ctx
        ctx.http_status = 200
        await self._start()
        # Servers may drop writes to a gone client silently: ASGI's http.disconnect says so.
        if ctx.receive is not None:
            self.watcher = asyncio.ensure_future(ctx.receive())
        try:
            async for data in self.chunks:
                block = self.complete_events(data)
                if block is None:
                    continue
                await self._forward(block)
                if not self.connected and (
                    self.drain_deadline is None or time.monotonic() > self.drain_deadline
                ):
                    break
            else:
                self.finished = True
        except (TimeoutError, aiohttp.ServerTimeoutError):
            ctx.status, ctx.http_status = "engine_error", 504
        except aiohttp.ClientError:
            ctx.status, ctx.http_status = "engine_error", 502
        finally:
            if self.watcher is not None and not self.watcher.done():
                self.watcher.cancel()
        await self._end()
        self.account()

    def complete_events(self, data: bytes) -> bytes | None:
        """Add bytes from the engine; return the whole events they complete (usage taken out
        when stripped), or None while an event is still incomplete."""
        if self.pending:
            data = self.pending + data
            self.pending = b""
        end = data.rfind(b"\n\n")
        if end < 0:
            self.pending = data
            return None
        if end + 2 < len(data):
            self.pending = data[end + 2 :]
            data = data[: end + 2]
        if USAGE_MARK in data:
            data, found = take_usage(data, strip=self.strip_usage)
            self.usage = found or self.usage
        self.events_received += data.count(b"data: {")
        return data

    async def _start(self) -> None:
        try:
            await self.send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", self.content_type),
                        (b"cache-control", b"no-cache"),
                        *self.headers,
                    ],
                }
            )
        except Exception:
            self._client_gone()

    def _client_gone(self) -> None:
        if self.connected:
            self.connected = False
            self.drain_deadline = time.monotonic() + self.drain_seconds

    async def _forward(self, block: bytes) -> None:
        if self.connected and self.watcher is not None and self.watcher.done():
            if self.watcher.result().get("type") == "http.disconnect":
                self._client_gone()
            else:  # a late empty body message: keep listening
                assert self.ctx.receive is not None
                self.watcher = asyncio.ensure_future(self.ctx.receive())
        if not self.connected:
            return
        if self.ctx.ttft is None:
            self.ctx.ttft = time.monotonic() - self.ctx.started
        try:
            await self.send({"type": "http.response.body", "body": block, "more_body": True})
            self.events_sent += block.count(b"data: {")
        except Exception:
            self._client_gone()

    async def _end(self) -> None:
        if not self.connected:
            return
        # The engine stopped mid-stream (it died, or timed out): end with an error event, which
        # OpenAI clients raise as an error, instead of a silent early end that reads as a
        # complete answer. (A partial event left in `pending` is dropped: it would not parse.)
        tail = b""
        if self.ctx.status == "engine_error":
            message = (
                "The engine stopped answering mid-stream."
                if self.ctx.http_status == 502
                else "The engine did not answer in time."
            )
            body = errors.error_body(message, "api_error", "engine_failed", None)
            tail = b"data: " + body + b"\n\n"
        try:
            await self.send({"type": "http.response.body", "body": tail, "more_body": False})
        except Exception:
            self.connected = False

    def account(self) -> None:
        """Put what the stream delivered into the request's counts."""
        ctx = self.ctx
        if not self.connected:
            ctx.status = "client_disconnected"
        if self.usage is not None:
            ctx.prompt_tokens, ctx.cached_tokens, ctx.completion_tokens = self.usage
        else:
            # The engine's usage never arrived (aborted stream): count the chunks it sent.
            ctx.usage_counted = True
            ctx.completion_tokens = max(self.events_received - self.is_chat, 0)
        if not self.connected or not self.finished:
            delivered = max(self.events_sent - self.is_chat, 0)
            ctx.sent_completion_tokens = (
                min(delivered, ctx.completion_tokens) if self.usage else delivered
            )
