"""Who may do what: the role matrix of the provisioning API.

- platform admins: everything (tests/test_api_crud.py);
- tenant admins: read their tenant, its users, quotas, grants, granted models, usage and audit
  events; manage its API keys; get 403 for fleet resources;
- tenant viewers: the same reads, no writes;
- a user without a role, or no user at all: nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from tenants.models import ApiToken, Tenant
from tests import factories
from tests.conftest import Actor

pytestmark = pytest.mark.django_db

FLEET = ["engine-runtimes", "model-versions", "nodes", "gpus", "deployments", "workers"]
TENANT_READABLE = [
    "tenants",
    "users",
    "api-keys",
    "api-tokens",
    "quotas",
    "models",
    "grants",
    "usage-records",
    "audit-events",
]

# For each endpoint a tenant member may read but only a platform admin may write:
# an object of tenant A, and a valid creation payload.
PLATFORM_WRITES: dict[str, Callable[[Tenant], tuple[Any, dict[str, Any]]]] = {
    "tenants": lambda t: (t, {"slug": "new-tenant", "name": "New"}),
    "users": lambda t: (
        _user(t),
        {"username": "newbie", "role": "tenant_admin", "tenant": t.pk},
    ),
    "quotas": lambda t: (
        factories.quota(t, api_key=factories.api_key(t)),
        {"tenant": t.pk, "tokens_per_day": 5},
    ),
    "grants": lambda t: (factories.grant(t), {"tenant": t.pk, "model": factories.model().pk}),
    "models": lambda t: (factories.grant(t).model, {"name": "new-model"}),
}


def _user(tenant: Tenant) -> Any:
    from tenants.models import Membership, Role

    user = get_user_model().objects.create_user(username="member-of-" + tenant.slug)
    Membership.objects.create(user=user, role=Role.TENANT_VIEWER, tenant=tenant)
    return user


@pytest.mark.parametrize("endpoint", FLEET)
def test_tenant_admins_and_viewers_get_403_for_fleet_resources(
    endpoint: str, admin_a: Actor, viewer_a: Actor
) -> None:
    for actor in (admin_a, viewer_a):
        assert actor.client.get(f"/api/v1/{endpoint}/").status_code == 403
        assert actor.client.post(f"/api/v1/{endpoint}/", {}, format="json").status_code in (
            403,
            405,
        )


def test_fleet_objects_are_403_for_tenant_admins_even_by_id(admin_a: Actor) -> None:
    node = factories.node()
    assert admin_a.client.get(f"/api/v1/nodes/{node.pk}/").status_code == 403
    assert admin_a.client.patch(f"/api/v1/nodes/{node.pk}/", {"state": "lost"}).status_code == 403
    assert admin_a.client.post(f"/api/v1/nodes/{node.pk}/rotate-credential/").status_code == 403


@pytest.mark.parametrize("endpoint", TENANT_READABLE)
def test_tenant_members_can_read_tenant_resources(
    endpoint: str, admin_a: Actor, viewer_a: Actor
) -> None:
    for actor in (admin_a, viewer_a):
        assert actor.client.get(f"/api/v1/{endpoint}/").status_code == 200


@pytest.mark.parametrize("endpoint", sorted(PLATFORM_WRITES))
def test_only_platform_admins_write_tenant_settings(
    endpoint: str, tenant_a: Tenant, admin_a: Actor, viewer_a: Actor, platform_admin: Actor
) -> None:
    obj, payload = PLATFORM_WRITES[endpoint](tenant_a)
    for actor in (admin_a, viewer_a):
        client = actor.client
        assert client.get(f"/api/v1/{endpoint}/{obj.pk}/").status_code == 200
        assert client.post(f"/api/v1/{endpoint}/", payload, format="json").status_code == 403
        assert client.patch(f"/api/v1/{endpoint}/{obj.pk}/", {}, format="json").status_code in (
            403,
            405,
        )
        assert client.delete(f"/api/v1/{endpoint}/{obj.pk}/").status_code == 403
        assert type(obj).objects.filter(pk=obj.pk).exists()
    created = platform_admin.client.post(f"/api/v1/{endpoint}/", payload, format="json")
    assert created.status_code == 201, created.data


def test_a_tenant_admin_manages_its_own_keys(admin_a: Actor, tenant_a: Tenant) -> None:
    created = admin_a.client.post("/api/v1/api-keys/", {"name": "prod"}, format="json")
    assert created.status_code == 201
    key_id = created.data["id"]
    renamed = admin_a.client.patch(f"/api/v1/api-keys/{key_id}/", {"name": "prod-2"})
    assert renamed.status_code == 200
    assert admin_a.client.post(f"/api/v1/api-keys/{key_id}/rotate/").status_code == 201
    assert admin_a.client.post(f"/api/v1/api-keys/{key_id}/revoke/").status_code == 200


def test_a_viewer_cannot_change_a_key(viewer_a: Actor, tenant_a: Tenant) -> None:
    key = factories.api_key(tenant_a, name="prod")
    response = viewer_a.client.patch(f"/api/v1/api-keys/{key.pk}/", {"name": "mine"})
    assert response.status_code == 403
    key.refresh_from_db()
    assert key.name == "prod"


def test_tenant_members_see_only_the_models_granted_to_them(
    admin_a: Actor, tenant_a: Tenant
) -> None:
    granted = factories.grant(tenant_a).model
    other = factories.model()
    names = [row["name"] for row in admin_a.client.get("/api/v1/models/").data["results"]]
    assert names == [granted.name]
    assert admin_a.client.get(f"/api/v1/models/{other.pk}/").status_code == 404


def test_a_user_without_a_role_gets_nothing(db: None) -> None:
    user = get_user_model().objects.create_user(username="drifter")
    _, token = ApiToken.issue(user=user, name="t")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    for endpoint in TENANT_READABLE + FLEET:
        assert client.get(f"/api/v1/{endpoint}/").status_code == 403, endpoint


def test_a_deactivated_users_token_stops_working(admin_a: Actor) -> None:
    get_user_model().objects.filter(pk=admin_a.user.pk).update(is_active=False)
    assert admin_a.client.get("/api/v1/api-keys/").status_code == 401


def test_a_session_login_works_for_the_browser_and_needs_csrf(platform_admin: Actor) -> None:
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="root", password="pw-root")
    assert client.get("/api/v1/nodes/").status_code == 200
    # A session without the CSRF token cannot write.
    response = client.post("/api/v1/tenants/", {"slug": "x", "name": "X"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in str(response.data)


def test_a_staff_superuser_without_membership_is_a_platform_admin(db: None) -> None:
    get_user_model().objects.create_superuser(username="boss", password="pw-boss-12345")
    client = APIClient()
    assert client.login(username="boss", password="pw-boss-12345")
    assert client.get("/api/v1/nodes/").status_code == 200
