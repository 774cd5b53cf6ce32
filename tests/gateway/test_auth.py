"""Authentication against the key snapshot, without an engine or a database."""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway import auth
from gateway.errors import GatewayError
from gateway.snapshot import KeyEntry, KeySnapshot
from tenants import keys


def entry_for(secret: keys.NewSecret, expires_at: float | None = None) -> KeyEntry:
    return KeyEntry(
        key_id=1,
        prefix=secret.prefix,
        hashed=secret.hashed,
        tenant_id=2,
        tenant_slug="acme",
        expires_at=expires_at,
        models=frozenset({"m"}),
        engine_priority=10,
        cache_salt="salt",
    )


def bearer(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode())]


def refused(headers: list[tuple[bytes, bytes]], snapshot: KeySnapshot) -> str:
    with pytest.raises(GatewayError) as caught:
        asyncio.run(auth.authenticate(headers, snapshot))
    assert (caught.value.status, caught.value.code) == (401, "invalid_api_key")
    return caught.value.message


def test_a_known_key_is_its_snapshot_entry() -> None:
    secret = keys.generate(keys.API_KEY_MARKER)
    entry = entry_for(secret)
    snapshot = KeySnapshot(by_prefix={secret.prefix: entry})
    assert asyncio.run(auth.authenticate(bearer(secret.plaintext), snapshot)) is entry


def test_missing_malformed_doubled_and_unknown_keys_are_each_a_401() -> None:
    secret = keys.generate(keys.API_KEY_MARKER)
    snapshot = KeySnapshot(by_prefix={secret.prefix: entry_for(secret)})
    assert "didn't provide" in refused([], snapshot)
    assert "exactly one" in refused(bearer(secret.plaintext) * 2, snapshot)
    assert "Incorrect" in refused([(b"authorization", b"Basic abc")], snapshot)
    assert "Incorrect" in refused(bearer("not-a-key"), snapshot)
    other = keys.generate(keys.API_KEY_MARKER)
    assert "Incorrect" in refused(bearer(other.plaintext), snapshot)
    # The right prefix with another secret: the HMAC compare refuses it.
    forged = secret.plaintext[:-1] + ("a" if secret.plaintext[-1] != "a" else "b")
    assert keys.prefix_of(forged, keys.API_KEY_MARKER) == secret.prefix
    assert "Incorrect" in refused(bearer(forged), snapshot)


def test_an_expired_key_is_refused_as_expired() -> None:
    secret = keys.generate(keys.API_KEY_MARKER)
    snapshot = KeySnapshot(by_prefix={secret.prefix: entry_for(secret, time.time() - 1)})
    assert "expired" in refused(bearer(secret.plaintext), snapshot)


def test_a_key_newer_than_the_snapshot_is_looked_up_once_by_its_prefix() -> None:
    secret = keys.generate(keys.API_KEY_MARKER)
    asked: list[str] = []

    async def lookup(prefix: str) -> KeyEntry | None:
        asked.append(prefix)
        return entry_for(secret)

    found = asyncio.run(auth.authenticate(bearer(secret.plaintext), KeySnapshot(), lookup))
    assert found.key_id == 1 and asked == [secret.prefix]
