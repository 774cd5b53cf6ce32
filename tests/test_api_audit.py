"""Every write through the API leaves an audit event, with no secret in it."""

from __future__ import annotations

import json

import pytest

from controlplane.models import AuditEvent
from tenants.models import Tenant
from tests import factories
from tests.conftest import Actor

pytestmark = pytest.mark.django_db


def test_an_update_records_who_from_where_and_old_and_new_values(
    platform_admin: Actor, tenant_a: Tenant
) -> None:
    response = platform_admin.client.patch(
        f"/api/v1/tenants/{tenant_a.pk}/",
        {"priority_class": "high"},
        format="json",
        REMOTE_ADDR="10.1.2.3",
    )
    assert response.status_code == 200
    event = AuditEvent.objects.get(action="update")
    assert event.changes == {"priority_class": ["normal", "high"]}
    assert (event.actor, event.via, event.remote_addr) == (platform_admin.user, "api", "10.1.2.3")
    assert event.tenant == tenant_a
    assert event.object_repr == "acme"


def test_an_update_that_changes_nothing_records_no_changes(
    platform_admin: Actor, tenant_a: Tenant
) -> None:
    platform_admin.client.patch(f"/api/v1/tenants/{tenant_a.pk}/", {"name": "Acme"})
    assert AuditEvent.objects.get(action="update").changes == {}


def test_creating_a_user_records_no_password_or_hash(
    platform_admin: Actor, tenant_a: Tenant
) -> None:
    response = platform_admin.client.post(
        "/api/v1/users/",
        {
            "username": "dora",
            "password": "correct horse battery",
            "role": "tenant_viewer",
            "tenant": tenant_a.pk,
        },
        format="json",
    )
    assert response.status_code == 201
    trail = json.dumps(list(AuditEvent.objects.values("changes")))
    assert "correct horse battery" not in trail
    assert "password" not in trail
    assert AuditEvent.objects.filter(action="create", object_type="auth.User").exists()


def test_a_quota_change_is_attributed_to_its_tenant(
    platform_admin: Actor, tenant_a: Tenant
) -> None:
    quota = factories.quota(tenant_a)
    platform_admin.client.patch(f"/api/v1/quotas/{quota.pk}/", {"requests_per_minute": 5})
    event = AuditEvent.objects.get(action="update", object_type="tenants.Quota")
    assert event.tenant == tenant_a
    assert event.changes == {"requests_per_minute": [60, 5]}


def test_refused_writes_leave_no_audit_event(admin_a: Actor, tenant_b: Tenant) -> None:
    admin_a.client.post("/api/v1/tenants/", {"slug": "x", "name": "X"})
    admin_a.client.post("/api/v1/api-keys/", {"tenant": tenant_b.pk, "name": "x"})
    admin_a.client.patch(f"/api/v1/tenants/{tenant_b.pk}/", {"name": "pwned"})
    assert not AuditEvent.objects.exists()
