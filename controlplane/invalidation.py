"""Tell every gateway replica that cached keys or routes are stale.

Writers (Django signal handlers, below) publish a small message naming what changed; each
gateway process subscribes and drops or reloads the matching cache. With Redis the message
goes through pub/sub on CHANNEL, so every replica hears it within milliseconds; without Redis
(the embedded, single-process mode) listeners registered in this process are called directly.

Message: JSON {"kind": "keys" | "routes" | "quotas", "id": <optional object id>,
"source": <its model label or null>, "gone": <true when it can no longer be used>}.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

CHANNEL = "controlplane:invalidate"
KINDS = ("keys", "routes", "quotas")

Listener = Callable[[dict[str, Any]], None]
_local_listeners: list[Listener] = []
_redis_client: Any = None


def add_local_listener(listener: Listener) -> None:
    """Register an in-process listener (the gateway does, whatever the mode)."""
    _local_listeners.append(listener)


def remove_local_listener(listener: Listener) -> None:
    """Unregister one (a gateway that shuts down; several start and stop in tests)."""
    with contextlib.suppress(ValueError):
        _local_listeners.remove(listener)


def _redis() -> Any:
    global _redis_client
    if _redis_client is None:
        import redis

        _redis_client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
    return _redis_client


def publish(
    kind: str, object_id: int | str | None = None, source: str | None = None, gone: bool = False
) -> None:
    """Publish after the current transaction commits, so readers see the new state.

    `source` names the changed object's model, `gone` says it can no longer be used (a revoked
    key, a suspended tenant): gateways act on that at once, before their reload.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown invalidation kind {kind!r}")
    message = {"kind": kind, "id": object_id, "source": source, "gone": gone}
    transaction.on_commit(lambda: _deliver(message))


def _deliver(message: dict[str, Any]) -> None:
    for listener in list(_local_listeners):
        try:
            listener(message)
        except Exception:
            logger.exception("invalidation listener failed for %s", message)
    if settings.REDIS_URL:
        try:
            _redis().publish(CHANNEL, json.dumps(message))
        except Exception:
            # Gateways also reload on a short timer, so a lost message delays, never breaks.
            logger.exception("could not publish invalidation %s to Redis", message)
