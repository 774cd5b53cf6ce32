"""Filtering, search, ordering and pagination conventions, and no N+1 queries on lists."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tenants.models import Role, Tenant
from tests import factories
from tests.conftest import Actor, make_actor

pytestmark = pytest.mark.django_db


def ids(response: object) -> list[int]:
    assert response.status_code == 200, response.data  # type: ignore[attr-defined]
    return [row["id"] for row in response.data["results"]]  # type: ignore[attr-defined]


def test_usage_filters_by_tenant_model_and_date_range(
    platform_admin: Actor, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    model = factories.model()
    now = timezone.now()
    old = factories.usage(tenant_a, model=model, created_at=now - timedelta(days=10))
    recent = factories.usage(tenant_a, model=model, created_at=now - timedelta(hours=1))
    other_model = factories.usage(tenant_a, created_at=now - timedelta(hours=1))
    other_tenant = factories.usage(tenant_b, model=model, created_at=now - timedelta(hours=1))
    client = platform_admin.client
    url = "/api/v1/usage-records/"
    assert set(ids(client.get(url, {"tenant": tenant_a.pk}))) == {old.pk, recent.pk, other_model.pk}
    assert set(ids(client.get(url, {"model": model.pk}))) == {old.pk, recent.pk, other_tenant.pk}
    assert set(ids(client.get(url, {"model_name": model.name, "tenant": tenant_a.pk}))) == {
        old.pk,
        recent.pk,
    }
    since = (now - timedelta(days=1)).isoformat()
    until = (now - timedelta(days=5)).isoformat()
    assert old.pk not in ids(client.get(url, {"created_after": since}))
    assert ids(client.get(url, {"created_before": until})) == [old.pk]
    bad = client.get(url, {"created_after": "yesterday"})
    assert bad.status_code == 400
    assert "created_after" in bad.data


def test_lists_search_and_order(platform_admin: Actor, tenant_a: Tenant) -> None:
    factories.api_key(tenant_a, name="zeta-batch")
    factories.api_key(tenant_a, name="alpha-prod")
    factories.api_key(tenant_a, name="beta-prod")
    client = platform_admin.client
    names = lambda r: [row["name"] for row in r.data["results"]]  # noqa: E731
    assert names(client.get("/api/v1/api-keys/", {"search": "prod", "ordering": "name"})) == [
        "alpha-prod",
        "beta-prod",
    ]
    assert names(client.get("/api/v1/api-keys/", {"ordering": "-name"}))[0] == "zeta-batch"


def test_api_keys_filter_by_status(admin_a: Actor, tenant_a: Tenant) -> None:
    active = factories.api_key(tenant_a)
    revoked = factories.api_key(tenant_a)
    revoked.revoke()
    url = "/api/v1/api-keys/"
    assert ids(admin_a.client.get(url, {"status": "active"})) == [active.pk]
    assert ids(admin_a.client.get(url, {"status": "revoked"})) == [revoked.pk]


def test_limit_offset_pagination_is_bounded(platform_admin: Actor) -> None:
    for _ in range(5):
        factories.model()
    client = platform_admin.client
    page = client.get("/api/v1/models/", {"limit": 2, "offset": 2, "ordering": "name"})
    assert page.data["count"] == 5
    assert len(page.data["results"]) == 2
    assert "offset=4" in page.data["next"]
    capped = client.get("/api/v1/models/", {"limit": 100000})
    assert capped.status_code == 200
    assert len(capped.data["results"]) == 5


def test_deployments_filter_by_model_name_and_state(platform_admin: Actor) -> None:
    running = factories.deployment()
    stopped = factories.deployment(desired_state="stopped")
    client = platform_admin.client
    model_name = running.model_version.model.name
    assert ids(client.get("/api/v1/deployments/", {"model_name": model_name})) == [running.pk]
    assert ids(client.get("/api/v1/deployments/", {"desired_state": "stopped"})) == [stopped.pk]


@pytest.mark.parametrize(
    ("endpoint", "make"),
    [
        ("api-keys", lambda t: factories.api_key(t)),
        ("quotas", lambda t: factories.quota(t, api_key=factories.api_key(t))),
        ("workers", lambda t: factories.worker()),
        ("usage-records", lambda t: factories.usage(t)),
        ("users", lambda t: make_actor(factories.unique("user"), Role.TENANT_VIEWER, t)),
        ("model-versions", lambda t: factories.version()),
        ("deployments", lambda t: factories.deployment()),
        ("grants", lambda t: factories.grant(t)),
    ],
)
def test_list_queries_do_not_grow_with_the_number_of_rows(
    endpoint: str,
    make: object,
    platform_admin: Actor,
    tenant_a: Tenant,
) -> None:
    for _ in range(3):
        make(tenant_a)  # type: ignore[operator]
    url = f"/api/v1/{endpoint}/"
    # The first request stamps the token's last use; count the requests after it.
    assert platform_admin.client.get(url).status_code == 200
    with CaptureQueriesContext(connection) as few:
        assert platform_admin.client.get(url).status_code == 200
    for _ in range(12):
        make(tenant_a)  # type: ignore[operator]
    with CaptureQueriesContext(connection) as many:
        assert platform_admin.client.get(url).status_code == 200
    assert len(many.captured_queries) == len(few.captured_queries), endpoint


def test_a_date_filter_with_any_utc_offset_is_an_instant_never_a_server_error(
    platform_admin: Actor, tenant_a: Tenant
) -> None:
    # Found by tests/test_api_fuzz.py: PostgreSQL refuses offsets beyond ±15:59, Python does not.
    # 2026-01-01T20:00+20:00 is 2026-01-01T00:00Z: the record an hour later is after it.
    record = factories.usage(tenant_a, created_at=timezone.datetime(2026, 1, 1, 1, tzinfo=UTC))
    client = platform_admin.client
    for url in ("/api/v1/usage-records/", "/api/v1/audit-events/"):
        response = client.get(url, {"created_after": "2026-01-01T20:00:00+20:00"})
        assert response.status_code == 200, response.data
    assert ids(client.get("/api/v1/usage-records/", {"created_after": "2026-01-01T20:00+20:00"}))
    assert record.pk in ids(
        client.get("/api/v1/usage-records/", {"created_before": "2026-01-01T21:30+20:00"})
    )
    # An instant UTC cannot hold is a field error.
    response = client.get("/api/v1/usage-records/", {"created_after": "9999-12-31T23:00-20:00"})
    assert response.status_code == 400 and "created_after" in response.data
