"""Three actors: a platform admin, tenant A's admin and tenant B's admin.

Over every tenant-scoped endpoint: each tenant admin's list holds its own tenant's objects and
not the other's; the other tenant's object is 404 for retrieve, update, delete and every
action (never 403, which would reveal that it exists); the platform admin sees both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import models

from tenants.models import ApiToken, Membership, Role, Tenant
from tests import factories
from tests.conftest import Actor

pytestmark = pytest.mark.django_db


def _member(tenant: Tenant) -> Any:
    user = get_user_model().objects.create_user(username=f"member-{tenant.slug}")
    Membership.objects.create(user=user, role=Role.TENANT_VIEWER, tenant=tenant)
    return user


@dataclass(frozen=True)
class Scoped:
    endpoint: str
    make: Callable[[Tenant], models.Model]
    # Methods the endpoint answers on a single object; the others are 405 for anyone.
    detail_methods: tuple[str, ...] = ("put", "patch", "delete")
    actions: tuple[str, ...] = field(default=())


SCOPED = [
    Scoped("tenants", lambda t: t),
    Scoped("users", _member),
    Scoped("api-keys", factories.api_key, ("put", "patch"), ("revoke", "rotate")),
    Scoped("quotas", lambda t: factories.quota(t)),
    Scoped("grants", lambda t: factories.grant(t), ("delete",)),
    Scoped("models", lambda t: factories.grant(t).model),
    Scoped("usage-records", factories.usage, ()),
    Scoped("audit-events", factories.audit_event, ()),
]


@pytest.mark.parametrize("resource", SCOPED, ids=lambda r: r.endpoint)
def test_each_tenant_admin_sees_only_its_own_tenant(
    resource: Scoped,
    tenant_a: Tenant,
    tenant_b: Tenant,
    platform_admin: Actor,
    admin_a: Actor,
    admin_b: Actor,
) -> None:
    mine, theirs = resource.make(tenant_a), resource.make(tenant_b)
    url = f"/api/v1/{resource.endpoint}/"

    def listed(actor: Actor) -> set[Any]:
        response = actor.client.get(url, {"limit": 500})
        assert response.status_code == 200, response.data
        return {row["id"] for row in response.data["results"]}

    assert mine.pk in listed(admin_a) and theirs.pk not in listed(admin_a)
    assert theirs.pk in listed(admin_b) and mine.pk not in listed(admin_b)
    assert {mine.pk, theirs.pk} <= listed(platform_admin)

    for actor, own, other in ((admin_a, mine, theirs), (admin_b, theirs, mine)):
        client = actor.client
        assert client.get(f"{url}{own.pk}/").status_code == 200
        assert client.get(f"{url}{other.pk}/").status_code == 404
        for method in ("put", "patch", "delete"):
            response = getattr(client, method)(f"{url}{other.pk}/", {}, format="json")
            expected = 404 if method in resource.detail_methods else 405
            assert response.status_code == expected, (method, response.status_code)
        for action in resource.actions:
            response = client.post(f"{url}{other.pk}/{action}/", {}, format="json")
            assert response.status_code == 404, action
        assert type(other).objects.filter(pk=other.pk).exists()
    for obj in (mine, theirs):
        assert platform_admin.client.get(f"{url}{obj.pk}/").status_code == 200


def test_another_tenants_key_is_not_rotated_or_revoked(tenant_b: Tenant, admin_a: Actor) -> None:
    key = factories.api_key(tenant_b)
    admin_a.client.post(f"/api/v1/api-keys/{key.pk}/revoke/")
    admin_a.client.post(f"/api/v1/api-keys/{key.pk}/rotate/")
    key.refresh_from_db()
    assert key.revoked_at is None and key.expires_at is None
    assert key.tenant.api_keys.count() == 1


def test_filtering_by_another_tenant_returns_nothing_and_reveals_nothing(
    tenant_a: Tenant, tenant_b: Tenant, admin_a: Actor
) -> None:
    factories.api_key(tenant_b)
    factories.usage(tenant_b)
    for endpoint in ("api-keys", "usage-records", "quotas", "grants", "audit-events"):
        existing = admin_a.client.get(f"/api/v1/{endpoint}/", {"tenant": tenant_b.pk})
        missing = admin_a.client.get(f"/api/v1/{endpoint}/", {"tenant": 999999})
        assert existing.status_code == missing.status_code == 200, endpoint
        assert existing.data["count"] == missing.data["count"] == 0, endpoint


def test_tokens_are_isolated_between_users_of_any_tenant(admin_a: Actor, admin_b: Actor) -> None:
    token_b = ApiToken.objects.get(user=admin_b.user)
    ids = {row["id"] for row in admin_a.client.get("/api/v1/api-tokens/").data["results"]}
    assert token_b.pk not in ids
    assert admin_a.client.get(f"/api/v1/api-tokens/{token_b.pk}/").status_code == 404


def test_audit_events_of_a_tenants_keys_are_visible_to_it_alone(
    admin_a: Actor, admin_b: Actor
) -> None:
    created = admin_a.client.post("/api/v1/api-keys/", {"name": "prod"}, format="json")
    assert created.status_code == 201
    trail_a = admin_a.client.get("/api/v1/audit-events/", {"object_type": "tenants.ApiKey"})
    trail_b = admin_b.client.get("/api/v1/audit-events/", {"object_type": "tenants.ApiKey"})
    assert [row["object_id"] for row in trail_a.data["results"]] == [str(created.data["id"])]
    assert trail_b.data["count"] == 0


def test_an_inference_key_or_a_node_credential_is_no_token_for_the_rest_api(
    tenant_a: Tenant, admin_a: Actor
) -> None:
    # Three kinds of secret, three doors: a key of tenant A (sk-cp-) opens only /v1/, a node
    # credential (cpn-) only the agent API, an API token (cpt-) only /api/v1/.
    from rest_framework.test import APIClient

    from nodes import credentials
    from tenants.models import ApiKey

    _, key = ApiKey.issue(tenant=tenant_a, name="inference")
    credential = credentials.issue(factories.node())
    for secret in (key, credential):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        for url in ("/api/v1/tenants/", "/api/v1/api-keys/", "/api/v1/usage-records/"):
            assert client.get(url).status_code == 401, (secret[:6], url)
        assert client.post("/api/v1/api-keys/", {"name": "x"}, format="json").status_code == 401
    token_client = APIClient()
    token_client.credentials(HTTP_AUTHORIZATION=f"Bearer {admin_a.token}")
    assert token_client.get("/api/agent/v1/workers").status_code in (401, 403)
    assert tenant_a.api_keys.count() == 1
