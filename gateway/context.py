"""What one request carries through the gateway, in one object instead of parameter lists.

A `RequestContext` is made when a request is authenticated and handed to every step after:
admission fills the reservation, the upstream step the worker and the status, the relay the
token counts and the time to first token, and settlement turns it into a usage event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.quotas import Admission
from gateway.snapshot import KeyEntry, ModelEntry, Upstream

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Reservation:
    """What admission reserved in the quota counters: the request's worst case."""

    tokens: int = 0
    cost: int = 0  # in models_registry.pricing.COST_UNIT


@dataclass(slots=True)
class RequestContext:
    request_id: str
    endpoint: str  # chat.completions, completions or embeddings
    key: KeyEntry
    started: float  # time.monotonic() when the request arrived
    created_at: float  # time.time() when the request arrived
    receive: Receive | None = None  # the client's ASGI receive, to notice a disconnect
    model: ModelEntry | None = None  # once the model is known and the key may use it
    stream: bool = False
    admission: Admission | None = None
    reservation: Reservation = field(default_factory=Reservation)
    extra_headers: Headers = field(default_factory=list)  # x-ratelimit-*, on every answer
    # The outcome, for the usage event and the metrics.
    upstream: Upstream | None = None  # the worker that answered (or was tried last)
    status: str = "ok"  # a UsageStatus value
    http_status: int = 200
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    sent_completion_tokens: int | None = None  # set when the client did not get it all
    usage_counted: bool = False  # the engine's usage never came: chunks were counted
    ttft: float | None = None  # seconds to the first streamed bytes

    def fail(self, http_status: int) -> None:
        """A refusal or failure answered by the gateway itself."""
        self.status = "client_error" if http_status < 500 else "engine_error"
        self.http_status = http_status
