"""API keys and API tokens through the REST API: shown once, revocable, rotatable."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.models import AuditEvent
from tenants.models import ApiKey, ApiToken, Tenant
from tests import factories
from tests.conftest import Actor

pytestmark = pytest.mark.django_db


def create_key(actor: Actor, **payload: object) -> dict:
    response = actor.client.post("/api/v1/api-keys/", payload, format="json")
    assert response.status_code == 201, response.data
    return response.data


def test_creating_a_key_returns_its_plaintext_once(admin_a: Actor, tenant_a: Tenant) -> None:
    created = create_key(admin_a, name="prod")
    assert created["key"].startswith(created["prefix"])
    key = ApiKey.objects.get(pk=created["id"])
    assert ApiKey.authenticate(created["key"]) == key
    assert key.tenant == tenant_a  # a tenant admin's key defaults to its own tenant
    assert key.created_by == admin_a.user


def test_the_plaintext_is_never_in_list_or_retrieve(admin_a: Actor) -> None:
    created = create_key(admin_a, name="prod")
    secret = created["key"]
    listing = admin_a.client.get("/api/v1/api-keys/")
    detail = admin_a.client.get(f"/api/v1/api-keys/{created['id']}/")
    for response in (listing, detail):
        assert response.status_code == 200
        body = json.dumps(response.data, default=str)
        assert secret not in body
        assert secret[len(created["prefix"]) :] not in body
    assert "key" not in detail.data
    assert "hashed_key" not in detail.data


def test_no_plaintext_or_hash_reaches_the_audit_log(admin_a: Actor) -> None:
    created = create_key(admin_a, name="prod")
    rotated = admin_a.client.post(f"/api/v1/api-keys/{created['id']}/rotate/", {}, format="json")
    assert rotated.status_code == 201
    key = ApiKey.objects.get(pk=created["id"])
    trail = json.dumps(list(AuditEvent.objects.values("changes", "object_repr")))
    assert created["key"] not in trail
    assert rotated.data["key"] not in trail
    assert key.hashed_key not in trail
    assert AuditEvent.objects.filter(action="rotate", object_id=str(key.pk), via="api").exists()


def test_a_tenant_admin_cannot_create_a_key_for_another_tenant(
    admin_a: Actor, tenant_b: Tenant
) -> None:
    response = admin_a.client.post(
        "/api/v1/api-keys/", {"tenant": tenant_b.pk, "name": "sneaky"}, format="json"
    )
    assert response.status_code == 400
    assert "tenant" in response.data
    assert not ApiKey.objects.filter(tenant=tenant_b).exists()


def test_a_platform_admin_must_name_the_tenant(platform_admin: Actor) -> None:
    response = platform_admin.client.post("/api/v1/api-keys/", {"name": "x"}, format="json")
    assert response.status_code == 400
    assert "tenant" in response.data


def test_a_viewer_cannot_create_revoke_or_rotate_keys(viewer_a: Actor, tenant_a: Tenant) -> None:
    key = factories.api_key(tenant_a)
    assert viewer_a.client.get(f"/api/v1/api-keys/{key.pk}/").status_code == 200
    assert viewer_a.client.post("/api/v1/api-keys/", {"name": "x"}).status_code == 403
    assert viewer_a.client.post(f"/api/v1/api-keys/{key.pk}/revoke/").status_code == 403
    assert viewer_a.client.post(f"/api/v1/api-keys/{key.pk}/rotate/").status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is None


def test_revoking_a_key_makes_authentication_refuse_it(admin_a: Actor) -> None:
    created = create_key(admin_a, name="prod")
    response = admin_a.client.post(f"/api/v1/api-keys/{created['id']}/revoke/")
    assert response.status_code == 200
    assert response.data["status"] == "revoked"
    assert ApiKey.authenticate(created["key"]) is None
    # A new key may reuse the name of a revoked one.
    create_key(admin_a, name="prod")


def test_an_expired_key_is_refused(admin_a: Actor, tenant_a: Tenant) -> None:
    created = create_key(admin_a, name="short", expires_at=timezone.now() + timedelta(hours=1))
    ApiKey.objects.filter(pk=created["id"]).update(expires_at=timezone.now() - timedelta(1))
    assert ApiKey.authenticate(created["key"]) is None
    listing = admin_a.client.get("/api/v1/api-keys/", {"status": "expired"})
    assert [row["id"] for row in listing.data["results"]] == [created["id"]]


def test_a_key_cannot_be_created_already_expired(admin_a: Actor) -> None:
    response = admin_a.client.post(
        "/api/v1/api-keys/",
        {"name": "late", "expires_at": (timezone.now() - timedelta(days=1)).isoformat()},
        format="json",
    )
    assert response.status_code == 400
    assert "expires_at" in response.data


def test_rotation_returns_a_new_key_and_both_work_during_the_grace(admin_a: Actor) -> None:
    created = create_key(admin_a, name="prod")
    response = admin_a.client.post(
        f"/api/v1/api-keys/{created['id']}/rotate/", {"grace_seconds": 3600}, format="json"
    )
    assert response.status_code == 201, response.data
    new_plaintext = response.data["key"]
    assert new_plaintext != created["key"]
    assert response.data["rotated_from"] == created["id"]
    old = ApiKey.objects.get(pk=created["id"])
    assert ApiKey.authenticate(created["key"]) == old
    assert ApiKey.authenticate(new_plaintext) is not None
    assert old.expires_at is not None
    remaining = old.expires_at - timezone.now()
    assert timedelta(minutes=59) < remaining <= timedelta(hours=1)
    # After the grace the old key is refused and the new one still works.
    assert not old.is_usable(now=timezone.now() + timedelta(hours=1, seconds=1))
    new = ApiKey.objects.get(pk=response.data["id"])
    assert new.is_usable(now=timezone.now() + timedelta(hours=2))


def test_rotation_keeps_the_allowed_models(admin_a: Actor, tenant_a: Tenant) -> None:
    granted = factories.grant(tenant_a).model
    created = create_key(admin_a, name="prod", allowed_models=[granted.pk])
    response = admin_a.client.post(f"/api/v1/api-keys/{created['id']}/rotate/")
    assert response.status_code == 201
    assert response.data["allowed_models"] == [granted.pk]


def test_rotation_grace_defaults_to_a_day_and_is_bounded(admin_a: Actor) -> None:
    created = create_key(admin_a, name="prod")
    too_long = admin_a.client.post(
        f"/api/v1/api-keys/{created['id']}/rotate/",
        {"grace_seconds": 365 * 86400},
        format="json",
    )
    assert too_long.status_code == 400
    assert "grace_seconds" in too_long.data
    negative = admin_a.client.post(
        f"/api/v1/api-keys/{created['id']}/rotate/", {"grace_seconds": -1}, format="json"
    )
    assert negative.status_code == 400
    assert ApiKey.objects.count() == 1
    default = admin_a.client.post(f"/api/v1/api-keys/{created['id']}/rotate/")
    assert default.status_code == 201
    old = ApiKey.objects.get(pk=created["id"])
    assert old.expires_at is not None
    assert timedelta(hours=23, minutes=59) < old.expires_at - timezone.now() <= timedelta(days=1)


def test_a_revoked_key_cannot_be_rotated(admin_a: Actor) -> None:
    created = create_key(admin_a, name="prod")
    admin_a.client.post(f"/api/v1/api-keys/{created['id']}/revoke/")
    response = admin_a.client.post(f"/api/v1/api-keys/{created['id']}/rotate/")
    assert response.status_code == 400
    assert ApiKey.objects.count() == 1


def test_a_key_is_rotated_once_then_its_successor_is(admin_a: Actor) -> None:
    created = create_key(admin_a, name="prod")
    first = admin_a.client.post(f"/api/v1/api-keys/{created['id']}/rotate/")
    assert first.status_code == 201
    again = admin_a.client.post(f"/api/v1/api-keys/{created['id']}/rotate/")
    assert again.status_code == 400
    assert first.data["prefix"] in str(again.data["non_field_errors"])
    assert admin_a.client.post(f"/api/v1/api-keys/{first.data['id']}/rotate/").status_code == 201
    assert ApiKey.objects.count() == 3


def test_allowed_models_must_be_granted_to_the_tenant(admin_a: Actor, tenant_a: Tenant) -> None:
    granted = factories.grant(tenant_a).model
    not_granted = factories.model()
    response = admin_a.client.post(
        "/api/v1/api-keys/",
        {"name": "prod", "allowed_models": [granted.pk, not_granted.pk]},
        format="json",
    )
    assert response.status_code == 400
    assert not_granted.name in str(response.data["allowed_models"])
    assert not ApiKey.objects.exists()


def test_two_active_keys_of_a_tenant_cannot_share_a_name(admin_a: Actor) -> None:
    create_key(admin_a, name="prod")
    response = admin_a.client.post("/api/v1/api-keys/", {"name": "prod"}, format="json")
    assert response.status_code == 400
    assert "name" in response.data


def test_a_key_cannot_move_to_another_tenant(platform_admin: Actor, tenant_a: Tenant) -> None:
    key = factories.api_key(tenant_a)
    other = Tenant.objects.create(slug="other", name="Other")
    response = platform_admin.client.patch(
        f"/api/v1/api-keys/{key.pk}/", {"tenant": other.pk}, format="json"
    )
    assert response.status_code == 400
    key.refresh_from_db()
    assert key.tenant == tenant_a


# --- API tokens ------------------------------------------------------------------------


def test_creating_a_token_returns_it_once_and_it_authenticates(viewer_a: Actor) -> None:
    response = viewer_a.client.post("/api/v1/api-tokens/", {"name": "ci"}, format="json")
    assert response.status_code == 201, response.data
    plaintext = response.data["token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert client.get("/api/v1/tenants/").status_code == 200
    detail = viewer_a.client.get(f"/api/v1/api-tokens/{response.data['id']}/")
    assert "token" not in detail.data
    assert plaintext not in json.dumps(detail.data, default=str)


def test_everyone_sees_only_their_own_tokens(admin_a: Actor, platform_admin: Actor) -> None:
    mine = {row["id"] for row in admin_a.client.get("/api/v1/api-tokens/").data["results"]}
    assert mine == set(ApiToken.objects.filter(user=admin_a.user).values_list("pk", flat=True))
    admin_token = ApiToken.objects.get(user=platform_admin.user)
    assert admin_a.client.get(f"/api/v1/api-tokens/{admin_token.pk}/").status_code == 404
    assert admin_a.client.post(f"/api/v1/api-tokens/{admin_token.pk}/revoke/").status_code == 404


def test_a_revoked_token_is_refused(admin_a: Actor) -> None:
    token = ApiToken.objects.get(user=admin_a.user)
    assert admin_a.client.post(f"/api/v1/api-tokens/{token.pk}/revoke/").status_code == 200
    assert admin_a.client.get("/api/v1/tenants/").status_code == 401


def test_createapitoken_prints_a_working_token_once(platform_admin: Actor) -> None:
    out, err = StringIO(), StringIO()
    call_command("createapitoken", "root", "--name", "terraform", stdout=out, stderr=err)
    plaintext = out.getvalue().strip()
    token = ApiToken.authenticate(plaintext)
    assert token is not None
    assert token.name == "terraform"
    assert token.user == platform_admin.user
    assert plaintext not in err.getvalue()


def test_createapitoken_refuses_an_unknown_user(db: None) -> None:
    with pytest.raises(CommandError, match="No user named"):
        call_command("createapitoken", "nobody", "--name", "x", stdout=StringIO())
