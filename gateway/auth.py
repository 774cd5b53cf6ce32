"""Who is calling: the API key, checked against the in-memory key snapshot.

`authenticate` reads exactly one `Authorization: Bearer sk-cp-…` header, finds the key by its
prefix and compares its HMAC. A key newer than the snapshot is looked up through `lookup`
(GatewayState.lookup_missing: one bounded database read); tests pass none.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from gateway import errors
from gateway.context import Headers
from gateway.snapshot import KeyEntry, KeySnapshot
from tenants import keys as key_format

Lookup = Callable[[str], Awaitable[KeyEntry | None]]


def bearer_token(headers: Headers) -> str:
    """The key as sent, well-formed (not yet known to be valid); 401 otherwise."""
    sent = [value for key, value in headers if key == b"authorization"]
    if len(sent) > 1:
        # Which one counts would depend on who reads it (a proxy, us): refuse both.
        raise errors.unauthorized("Send exactly one Authorization header.")
    raw = bytes(sent[0]) if sent else None
    if not raw:
        raise errors.unauthorized(
            "You didn't provide an API key. Send it as `Authorization: Bearer <key>`."
        )
    scheme, _, token = raw.decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not key_format.looks_like(token, key_format.API_KEY_MARKER):
        raise errors.unauthorized("Incorrect API key provided.")
    return token


async def authenticate(
    headers: Headers, snapshot: KeySnapshot, lookup: Lookup | None = None
) -> KeyEntry:
    token = bearer_token(headers)
    prefix = key_format.prefix_of(token, key_format.API_KEY_MARKER)
    entry = snapshot.by_prefix.get(prefix)
    if entry is None and lookup is not None:
        entry = await lookup(prefix)
    if entry is None or not key_format.matches(token, entry.hashed):
        raise errors.unauthorized("Incorrect API key provided.")
    # Expiry needs no invalidation: it is compared on every request.
    if entry.expires_at is not None and entry.expires_at <= time.time():
        raise errors.unauthorized("This API key has expired.")
    return entry
