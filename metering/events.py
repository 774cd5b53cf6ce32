"""The usage event: what the gateway knows about one request, on its way to a UsageRecord.

One typed record from the gateway's settlement to the INSERT: its fields are named after
UsageRecord's columns (`tests/gateway/test_events.py` checks that the two stay the same set),
so `metering.buffer.write_records` maps a field to its column by name, with no hand-kept list.

On the wire (the Redis list, the embedded writer's deque) it is compact JSON, the cost as a
decimal string (exact). `decode` also reads the dict shape that gateways of the previous version
wrote (`ttft_ms`, no `cost`): during an upgrade, events already buffered are still written, and
priced at flush time from the version's prices, as that version did.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

# Names the previous version wrote, and the field each one is now.
RENAMED = {"ttft_ms": "time_to_first_token_ms"}


class UnreadableEvent(ValueError):
    """A buffered item that is not a usage event (dropped, with an error in the log)."""


@dataclass(frozen=True, slots=True)
class UsageEvent:
    request_id: str
    tenant_id: int
    endpoint: str  # chat.completions, completions or embeddings
    status: str  # a UsageStatus value
    http_status: int
    created_at: float  # epoch seconds, when the request arrived
    api_key_id: int | None = None
    model_id: int | None = None
    model_version_id: int | None = None
    worker_id: int | None = None
    streamed: bool = False
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    sent_completion_tokens: int | None = None
    usage_counted: bool = False
    latency_ms: int = 0
    time_to_first_token_ms: int | None = None
    # USD, computed once at request time from the routed price. None only in events written by
    # the previous version: those are priced when flushed.
    cost: Decimal | None = None

    INTEGERS: ClassVar[frozenset[str]] = frozenset(
        {
            "tenant_id",
            "http_status",
            "prompt_tokens",
            "cached_tokens",
            "completion_tokens",
            "latency_ms",
        }
    )
    OPTIONAL_INTEGERS: ClassVar[frozenset[str]] = frozenset(
        {
            "api_key_id",
            "model_id",
            "model_version_id",
            "worker_id",
            "sent_completion_tokens",
            "time_to_first_token_ms",
        }
    )

    def encode(self) -> bytes:
        # Not dataclasses.asdict: its deep copy costs a third more, once per request.
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
        if self.cost is not None:
            data["cost"] = str(self.cost)
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> UsageEvent:
        """Read an encoded event, of this version or the previous one; UnreadableEvent else."""
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise UnreadableEvent(f"not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise UnreadableEvent("not a JSON object")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UsageEvent:
        known = set(_FIELD_NAMES)
        values: dict[str, Any] = {}
        for name, value in data.items():
            name = RENAMED.get(name, name)
            if name in known:  # a field of a later version is ignored, not fatal
                values[name] = value
        try:
            for name in cls.INTEGERS & values.keys():
                values[name] = int(values[name])
            for name in cls.OPTIONAL_INTEGERS & values.keys():
                values[name] = None if values[name] is None else int(values[name])
            for name in ("streamed", "usage_counted"):
                values[name] = bool(values.get(name))
            values["created_at"] = float(values["created_at"])
            values["request_id"] = str(values["request_id"])
            values["endpoint"] = str(values["endpoint"])
            values["status"] = str(values["status"])
            cost = values.get("cost")
            values["cost"] = None if cost is None else Decimal(str(cost))
            return cls(**values)
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise UnreadableEvent(f"{exc.__class__.__name__}: {exc}") from exc


_FIELD_NAMES = tuple(f.name for f in fields(UsageEvent))
