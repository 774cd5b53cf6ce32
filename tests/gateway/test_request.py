"""Reading a request, without an engine: every refusal names its status, code and field."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway import request
from gateway.errors import GatewayError


def refusal(body: bytes | dict[str, Any], endpoint: str = "chat.completions") -> GatewayError:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    with pytest.raises(GatewayError) as caught:
        request.parse(raw, endpoint)
    return caught.value


def test_a_well_formed_chat_request_is_read_with_its_limits_and_stream_choice() -> None:
    parsed = request.parse(
        json.dumps(
            {
                "model": "m",
                "messages": [],
                "stream": True,
                "max_tokens": 9,
                "stream_options": {"include_usage": True},
                "temperature": 0.2,
            }
        ).encode(),
        "chat.completions",
    )
    assert (parsed.model, parsed.stream, parsed.max_tokens) == ("m", True, 9)
    assert parsed.client_wants_usage and parsed.payload["temperature"] == 0.2


def test_max_completion_tokens_wins_over_max_tokens_and_both_may_be_absent() -> None:
    both = request.parse(
        b'{"model": "m", "max_tokens": 9, "max_completion_tokens": 4}', "chat.completions"
    )
    assert both.max_tokens == 4
    neither = request.parse(b'{"model": "m"}', "completions")
    assert neither.max_tokens is None and not neither.stream and not neither.client_wants_usage


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'"a string"', None),
        (b"\xff\xfe{}", None),  # not UTF-8
        (b"[" * 100_000, None),  # nested deeper than the parser goes
        ({"messages": []}, "model"),
        ({"model": 7}, "model"),
        ({"model": ""}, "model"),
        ({"model": "m", "stream": "yes"}, "stream"),
        ({"model": "m", "max_tokens": -3}, "max_tokens"),
        ({"model": "m", "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "max_tokens": True}, "max_tokens"),
        ({"model": "m", "max_tokens": 1.5}, "max_tokens"),
        ({"model": "m", "max_tokens": 2**31}, "max_tokens"),
        ({"model": "m", "max_completion_tokens": "9"}, "max_completion_tokens"),
        ({"model": "m", "stream": True, "stream_options": [1]}, "stream_options"),
        ({"model": "m", "stream_options": {"include_usage": True}}, "stream_options"),
        ({"model": "m", "user": 5}, "user"),
    ],
)
def test_each_malformed_or_mistyped_body_is_a_400_naming_the_field(
    body: bytes | dict[str, Any], param: str | None
) -> None:
    error = refusal(body)
    assert error.status == 400 and error.param == param
    assert json.loads(error.body())["error"]["type"] == "invalid_request_error"


def test_embeddings_cannot_be_streamed() -> None:
    error = refusal({"model": "m", "input": "x", "stream": True}, "embeddings")
    assert (error.status, error.param) == (400, "stream")


def test_the_largest_allowed_max_tokens_is_accepted() -> None:
    parsed = request.parse(json.dumps({"model": "m", "max_tokens": 2**31 - 1}).encode(), "x")
    assert parsed.max_tokens == request.MAX_TOKENS_LIMIT


@pytest.mark.parametrize(
    "content_type",
    [None, b"application/json", b"Application/JSON; charset=utf-8", b"application/vnd.x+json"],
)
def test_json_content_types_and_none_at_all_are_accepted(content_type: bytes | None) -> None:
    headers = [] if content_type is None else [(b"content-type", content_type)]
    request.check_content_type(headers)


@pytest.mark.parametrize("content_type", [b"text/plain", b"application/x-www-form-urlencoded"])
def test_other_content_types_are_a_415(content_type: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        request.check_content_type([(b"content-type", content_type)])
    assert (caught.value.status, caught.value.code) == (415, "unsupported_media_type")


def _receive(*chunks: bytes, disconnect: bool = False) -> Any:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    if disconnect:
        messages[-1]["more_body"] = True
        messages.append({"type": "http.disconnect"})

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return receive


def test_a_body_sent_in_pieces_is_read_whole() -> None:
    body = asyncio.run(request.read_body([], _receive(b'{"a"', b": 1", b"}"), max_body=100))
    assert body == b'{"a": 1}'


def test_a_body_over_the_limit_is_a_413_whether_announced_or_not() -> None:
    for headers in ([], [(b"content-length", b"101")]):
        with pytest.raises(GatewayError) as caught:
            asyncio.run(request.read_body(headers, _receive(b"x" * 60, b"x" * 60), max_body=100))
        assert (caught.value.status, caught.value.code) == (413, "request_too_large")


def test_a_client_that_leaves_while_sending_is_a_reset_not_an_error_answer() -> None:
    with pytest.raises(ConnectionResetError):
        asyncio.run(request.read_body([], _receive(b"{", disconnect=True), max_body=100))
