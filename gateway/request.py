"""Reading a request: content type, body, and the few fields the gateway itself checks.

Pure functions (the body reader only awaits the ASGI `receive` it is given): every refusal is
a GatewayError in OpenAI's shape, tested without an engine in tests/gateway/test_request.py.
Only `model`, `stream`, `max_tokens`/`max_completion_tokens`, `stream_options` and `user` are
checked; every other field goes to the engine untouched, which answers its own 400 for them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gateway import errors
from gateway.context import Headers, Receive
from gateway.errors import GatewayError

ENDPOINTS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
JSON = b"application/json"
# Larger than any model's context; what a 32-bit engine field and the quota counters hold.
MAX_TOKENS_LIMIT = 2**31 - 1


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    payload: dict[str, Any]  # the whole body, as sent
    model: str
    stream: bool
    max_tokens: int | None  # max_completion_tokens, else max_tokens, else None
    client_wants_usage: bool  # stream_options.include_usage: keep the engine's usage chunk


def header(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return bytes(value)
    return None


def check_content_type(headers: Headers) -> None:
    """JSON, or no Content-Type at all: what the engines (FastAPI) parse as JSON too.

    Anything else (a form, text/plain) was parsed as JSON regardless; now it is a 415.
    """
    raw = header(headers, b"content-type")
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


async def read_body(headers: Headers, receive: Receive, max_body: int) -> bytes:
    """The whole body, or 413 beyond `max_body`; ConnectionResetError if the client leaves."""
    length = header(headers, b"content-length")
    too_large = length is not None and length.isdigit() and int(length) > max_body
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client disconnected while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body:
            too_large = True
        if not too_large:
            chunks.append(chunk)
        # An oversized body is read (and dropped) up to a bound before the 413, so that
        # clients still sending see the answer rather than a reset connection.
        if not message.get("more_body") or size > 4 * max_body:
            break
    if too_large:
        raise GatewayError(
            413, f"Request body is over the limit of {max_body} bytes.", code="request_too_large"
        )
    return b"".join(chunks)


def parse(body: bytes, endpoint: str) -> ParsedRequest:
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
    return ParsedRequest(
        payload=payload,
        model=model,
        stream=bool(stream),
        max_tokens=payload.get("max_completion_tokens") or payload.get("max_tokens"),
        client_wants_usage=bool((options or {}).get("include_usage")),
    )
