"""The SSE relay and usage extraction, without an engine: the engine's stream is a list of byte
chunks, cut wherever a network would cut them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from gateway.context import RequestContext
from gateway.snapshot import KeyEntry
from gateway.sse import StreamRelay, Usage, take_usage

KEY = KeyEntry(1, "p", "h", 2, "acme", None, frozenset({"m"}), 10, "salt")


def chunk(text: str) -> bytes:
    body = {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}}],
    }
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def role_chunk() -> bytes:
    body = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "a"}}]}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def usage_chunk(prompt: int, completion: int, cached: int = 0) -> bytes:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    return (
        b"data: "
        + json.dumps({"choices": [], "usage": usage}, separators=(",", ":")).encode()
        + b"\n\n"
    )


DONE = b"data: [DONE]\n\n"


def engine_stream(tokens: int, usage: bool = True) -> bytes:
    data = role_chunk() + b"".join(chunk(f"w{i}") for i in range(tokens))
    return data + (usage_chunk(5, tokens) if usage else b"") + DONE


def cut(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


class Client:
    """The ASGI side: records what was sent; can hang up after some body messages."""

    def __init__(self, hang_up_after: int | None = None, send_fails: bool = False) -> None:
        self.messages: list[dict[str, Any]] = []
        self.hang_up_after = hang_up_after
        self.send_fails = send_fails
        self.gone = asyncio.Event()

    async def send(self, message: dict[str, Any]) -> None:
        if self.send_fails and message["type"] == "http.response.body":
            raise OSError("broken pipe")
        self.messages.append(message)
        bodies = [m for m in self.messages if m["type"] == "http.response.body"]
        if self.hang_up_after is not None and len(bodies) >= self.hang_up_after:
            self.gone.set()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    @property
    def body(self) -> bytes:
        return b"".join(m["body"] for m in self.messages if m["type"] == "http.response.body")


async def _pieces(
    pieces: list[bytes], fail: BaseException | None, pause: float
) -> AsyncIterator[bytes]:
    for piece in pieces:
        await asyncio.sleep(pause)
        yield piece
    if fail is not None:
        raise fail


def relay(
    pieces: list[bytes],
    *,
    client: Client | None = None,
    wants_usage: bool = False,
    fail: BaseException | None = None,
    drain_seconds: float = 10,
    pause: float = 0,
) -> tuple[RequestContext, Client]:
    client = client or Client()
    ctx = RequestContext(
        "req_1", "chat.completions", KEY, time.monotonic(), time.time(), receive=client.receive
    )
    ctx.stream = True

    async def main() -> None:
        await StreamRelay(
            ctx,
            client.send,
            _pieces(pieces, fail, pause),
            headers=[(b"x-request-id", b"req_1")],
            content_type=b"text/event-stream",
            client_wants_usage=wants_usage,
            drain_seconds=drain_seconds,
        ).run()

    asyncio.run(main())
    return ctx, client


def test_the_usage_chunk_is_found_and_stripped_when_the_client_did_not_ask() -> None:
    kept, usage = take_usage(chunk("a") + usage_chunk(3, 1, cached=2) + DONE, strip=True)
    assert usage == Usage(3, 2, 1)
    assert kept == chunk("a") + DONE


def test_the_usage_chunk_is_kept_when_the_client_asked_for_it() -> None:
    data = chunk("a") + usage_chunk(3, 1) + DONE
    assert take_usage(data, strip=False) == (data, Usage(3, 0, 1))


def test_a_chunk_whose_text_mentions_usage_is_not_taken_for_the_usage_chunk() -> None:
    data = chunk('"usage":{ is a word here')
    assert take_usage(data, strip=True) == (data, None)


def test_a_stream_cut_anywhere_reaches_the_client_whole_and_without_the_usage_chunk() -> None:
    for size in (1, 7, 64, 10_000):
        ctx, client = relay(cut(engine_stream(6), size))
        assert client.body == role_chunk() + b"".join(chunk(f"w{i}") for i in range(6)) + DONE
        assert (ctx.status, ctx.http_status) == ("ok", 200)
        assert (ctx.prompt_tokens, ctx.completion_tokens) == (5, 6)
        assert not ctx.usage_counted and ctx.sent_completion_tokens is None
        assert ctx.ttft is not None


def test_a_client_that_asked_for_usage_gets_the_usage_chunk() -> None:
    ctx, client = relay(cut(engine_stream(3), 50), wants_usage=True)
    assert usage_chunk(5, 3) in client.body and ctx.completion_tokens == 3


def test_a_client_that_hangs_up_is_billed_the_engines_count_after_the_drain() -> None:
    # The client leaves after two body messages; the relay keeps reading until the usage.
    pieces = [role_chunk(), chunk("a"), chunk("b"), chunk("c"), chunk("d"), usage_chunk(5, 4)]
    ctx, _ = relay([*pieces, DONE], client=Client(hang_up_after=2), pause=0.01)
    assert ctx.status == "client_disconnected"
    assert ctx.completion_tokens == 4 and not ctx.usage_counted  # the engine's own count
    assert ctx.sent_completion_tokens is not None and ctx.sent_completion_tokens < 4


def test_without_a_drain_the_tokens_are_counted_from_the_chunks_received() -> None:
    pieces = [role_chunk(), chunk("a"), chunk("b"), chunk("c"), usage_chunk(5, 3), DONE]
    ctx, _ = relay(pieces, client=Client(hang_up_after=2), drain_seconds=0, pause=0.01)
    assert ctx.status == "client_disconnected" and ctx.usage_counted  # the usage never came
    assert ctx.sent_completion_tokens == 1  # the role chunk and "a"
    assert 1 <= ctx.completion_tokens <= 3  # what was read before giving up, never the usage


def test_a_client_whose_writes_fail_is_recorded_as_disconnected() -> None:
    ctx, _ = relay([engine_stream(3)], client=Client(send_fails=True))
    assert ctx.status == "client_disconnected"
    assert (ctx.completion_tokens, ctx.sent_completion_tokens) == (3, 0)


def test_an_engine_that_dies_mid_stream_ends_it_with_an_error_event() -> None:
    pieces = [role_chunk(), chunk("a"), chunk("b")]
    ctx, client = relay(pieces, fail=aiohttp.ClientPayloadError("connection lost"))
    assert (ctx.status, ctx.http_status) == ("engine_error", 502)
    assert ctx.usage_counted and ctx.completion_tokens == 2  # chat's role chunk is no token
    assert ctx.sent_completion_tokens == 2
    last = client.messages[-1]
    assert last["more_body"] is False
    error = json.loads(last["body"].removeprefix(b"data: "))["error"]
    assert (error["code"], error["message"]) == (
        "engine_failed",
        "The engine stopped answering mid-stream.",
    )


def test_an_engine_that_stops_answering_in_time_is_a_504_in_the_record() -> None:
    ctx, client = relay([role_chunk()], fail=aiohttp.ServerTimeoutError("read timeout"))
    assert (ctx.status, ctx.http_status) == ("engine_error", 504)
    assert b"did not answer in time" in client.body
