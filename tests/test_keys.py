from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from controlplane import audit, invalidation
from tenants import keys, services
from tenants.models import ApiKey, Tenant

pytestmark = pytest.mark.django_db


def test_the_plaintext_is_in_no_table_after_creation(tenant_a: Tenant) -> None:
    _, plaintext = ApiKey.issue(tenant=tenant_a, name="prod")
    secret_part = plaintext[len(keys.API_KEY_MARKER) + keys.IDENT_LENGTH :]
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - table names from introspection
            for row in cursor.fetchall():
                assert not any(secret_part in str(value) for value in row), table


def test_it_authenticates_the_plaintext_once_issued(tenant_a: Tenant) -> None:
    key, plaintext = ApiKey.issue(tenant=tenant_a, name="prod")
    assert ApiKey.authenticate(plaintext) == key
    assert key.hashed_key == keys.keyed_hash(plaintext)
    assert plaintext.startswith(key.prefix)


def test_it_rejects_a_key_with_one_character_changed(tenant_a: Tenant) -> None:
    _, plaintext = ApiKey.issue(tenant=tenant_a, name="prod")
    tampered = plaintext[:-1] + ("a" if plaintext[-1] != "a" else "b")
    assert ApiKey.authenticate(tampered) is None


def test_it_rejects_revoked_key(tenant_a: Tenant) -> None:
    key, plaintext = ApiKey.issue(tenant=tenant_a, name="prod")
    key.revoke()
    assert ApiKey.authenticate(plaintext) is None


def test_it_rejects_expired_key(tenant_a: Tenant) -> None:
    _, plaintext = ApiKey.issue(
        tenant=tenant_a, name="prod", expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert ApiKey.authenticate(plaintext) is None


def test_it_rejects_keys_of_an_inactive_tenant(tenant_a: Tenant) -> None:
    _, plaintext = ApiKey.issue(tenant=tenant_a, name="prod")
    Tenant.objects.filter(pk=tenant_a.pk).update(active=False)
    assert ApiKey.authenticate(plaintext) is None


def test_rotation_keeps_the_old_key_working_for_the_grace_period(tenant_a: Tenant) -> None:
    old, old_plaintext = ApiKey.issue(tenant=tenant_a, name="prod")
    new, new_plaintext = services.rotate_key(old, grace=timedelta(hours=1), origin=audit.SYSTEM)
    assert ApiKey.authenticate(old_plaintext) == old
    assert ApiKey.authenticate(new_plaintext) == new
    old.refresh_from_db()
    assert old.expires_at is not None
    assert timedelta(minutes=59) < old.expires_at - timezone.now() <= timedelta(hours=1)


def test_revoking_a_key_tells_the_gateways_to_drop_it_at_once(
    tenant_a: Tenant, django_capture_on_commit_callbacks: Any
) -> None:
    """Revocation is a conditional UPDATE (no post_save), so it publishes the invalidation
    itself; without it a gateway kept a revoked key until its next reload."""
    key, _ = ApiKey.issue(tenant=tenant_a, name="leaked")
    heard: list[dict[str, Any]] = []
    invalidation.add_local_listener(heard.append)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            services.revoke_key(key, origin=audit.CLI)
        with django_capture_on_commit_callbacks(execute=True):
            services.revoke_key(key, origin=audit.CLI)  # a second revocation changes nothing
    finally:
        invalidation.remove_local_listener(heard.append)
    gone = [m for m in heard if m["kind"] == "keys" and m["gone"]]
    assert [(m["id"], m["source"]) for m in gone] == [(key.pk, "tenants.ApiKey")]
