"""One change, one audit record: whichever face makes it (REST API, dashboard, Django admin,
service or command), the trail names it with the same action and the same shape of `changes`,
and only `via` tells the faces apart (controlplane/audit.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from controlplane import audit
from controlplane.models import AuditEvent
from models_registry.models import ModelGrant, ModelVersion
from tenants import services
from tenants.models import ApiKey, Quota, Tenant
from tests import factories
from tests.conftest import Actor
from tests.faces import board as board
from tests.faces import staff as staff

pytestmark = pytest.mark.django_db


def trail(object_type: str, action: str) -> dict[str, set[str]]:
    """{via: the field names its `changes` held} for each event of this action."""
    events = AuditEvent.objects.filter(object_type=object_type, action=action)
    return {event.via: set(event.changes) for event in events}


def same_shape_from(faces: set[str], shapes: dict[str, set[str]]) -> None:
    assert set(shapes) == faces, shapes
    assert len({frozenset(s) for s in shapes.values()}) == 1, shapes


def test_issuing_a_key_is_one_issue_event_of_the_same_shape_from_every_face(
    platform_admin: Actor, board: Client, staff: Client, tenant_a: Tenant
) -> None:
    platform_admin.client.post("/api/v1/api-keys/", {"tenant": tenant_a.pk, "name": "a"})
    board.post(reverse("dashboard:key-create", args=["acme"]), {"name": "b"})
    staff.post(reverse("admin:tenants_apikey_add"), {"tenant": tenant_a.pk, "name": "c"})
    services.issue_key(ApiKey(tenant=tenant_a, name="d"), origin=audit.SYSTEM)
    assert ApiKey.objects.count() == 4
    shapes = trail("tenants.ApiKey", "issue")
    same_shape_from({"api", "dashboard", "admin", "system"}, shapes)
    assert {"name", "prefix", "allowed_models", "expires_at"} <= shapes["api"]
    assert "hashed_key" not in shapes["api"]
    assert not AuditEvent.objects.filter(object_type="tenants.ApiKey", action="create").exists()


def test_revoking_a_key_is_one_revoke_event_from_every_face(
    platform_admin: Actor, board: Client, staff: Client, tenant_a: Tenant
) -> None:
    keys = [factories.api_key(tenant_a) for _ in range(4)]
    platform_admin.client.post(f"/api/v1/api-keys/{keys[0].pk}/revoke/")
    board.post(reverse("dashboard:key-revoke", args=["acme", keys[1].pk]))
    staff.post(
        reverse("admin:tenants_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [keys[2].pk]},
    )
    services.revoke_key(keys[3], origin=audit.SYSTEM)
    assert not ApiKey.objects.filter(revoked_at__isnull=True).exists()
    same_shape_from({"api", "dashboard", "admin", "system"}, trail("tenants.ApiKey", "revoke"))
    # Revoking again changes nothing and records nothing.
    platform_admin.client.post(f"/api/v1/api-keys/{keys[0].pk}/revoke/")
    assert AuditEvent.objects.filter(action="revoke").count() == 4


def test_rotating_a_key_is_a_rotate_and_an_issue_from_every_face(
    platform_admin: Actor, board: Client, tenant_a: Tenant
) -> None:
    first, second = factories.api_key(tenant_a), factories.api_key(tenant_a)
    assert platform_admin.client.post(f"/api/v1/api-keys/{first.pk}/rotate/").status_code == 201
    rotated = board.post(
        reverse("dashboard:key-rotate", args=["acme", second.pk]), {"grace": "3600"}
    )
    assert rotated.status_code == 200
    rotations = trail("tenants.ApiKey", "rotate")
    same_shape_from({"api", "dashboard"}, rotations)
    assert rotations["api"] == {"rotated_to", "grace_seconds", "expires_at"}
    assert set(trail("tenants.ApiKey", "issue")) == {"api", "dashboard"}


def test_granting_and_ungranting_a_model_are_grant_and_ungrant_from_every_face(
    platform_admin: Actor, board: Client, staff: Client, tenant_a: Tenant
) -> None:
    models = [factories.model() for _ in range(3)]
    platform_admin.client.post("/api/v1/grants/", {"tenant": tenant_a.pk, "model": models[0].pk})
    board.post(reverse("dashboard:grant-create", args=["acme"]), {"model": models[1].pk})
    staff.post(
        reverse("admin:models_registry_modelgrant_add"),
        {"tenant": tenant_a.pk, "model": models[2].pk},
    )
    grants = list(ModelGrant.objects.order_by("id"))
    assert len(grants) == 3
    same_shape_from({"api", "dashboard", "admin"}, trail("models_registry.ModelGrant", "grant"))
    platform_admin.client.delete(f"/api/v1/grants/{grants[0].pk}/")
    board.post(reverse("dashboard:grant-delete", args=["acme", grants[1].pk]))
    staff.post(
        reverse("admin:models_registry_modelgrant_delete", args=[grants[2].pk]), {"post": "yes"}
    )
    assert not ModelGrant.objects.exists()
    same_shape_from({"api", "dashboard", "admin"}, trail("models_registry.ModelGrant", "ungrant"))


def test_a_versions_state_change_is_set_state_from_every_face(
    platform_admin: Actor, board: Client, staff: Client
) -> None:
    versions = [factories.version(state="draft") for _ in range(3)]
    platform_admin.client.patch(
        f"/api/v1/model-versions/{versions[0].pk}/", {"state": "active"}, format="json"
    )
    board.post(reverse("dashboard:version-state", args=[versions[1].pk]), {"state": "active"})
    admin_form = admin_version_form(versions[2]) | {"state": "active"}
    staff.post(
        reverse("admin:models_registry_modelversion_change", args=[versions[2].pk]), admin_form
    )
    assert set(ModelVersion.objects.values_list("state", flat=True)) == {"active"}
    shapes = trail("models_registry.ModelVersion", "set_state")
    same_shape_from({"api", "dashboard", "admin"}, shapes)
    assert shapes["api"] == {"state"}
    assert not AuditEvent.objects.filter(action="update").exists()


def test_a_quota_is_created_and_updated_with_the_same_shapes_from_every_face(
    platform_admin: Actor, board: Client, staff: Client
) -> None:
    tenants = [Tenant.objects.create(slug=f"t{i}", name=f"T{i}") for i in range(3)]
    platform_admin.client.post(
        "/api/v1/quotas/", {"tenant": tenants[0].pk, "requests_per_minute": 5}, format="json"
    )
    board.post(reverse("dashboard:quota-create", args=["t1"]), {"requests_per_minute": "5"})
    staff.post(
        reverse("admin:tenants_quota_add"),
        {"tenant": tenants[2].pk, "requests_per_minute": "5"},
    )
    assert Quota.objects.count() == 3
    same_shape_from({"api", "dashboard", "admin"}, trail("tenants.Quota", "create"))
    quotas = {q.tenant.slug: q for q in Quota.objects.select_related("tenant")}
    platform_admin.client.patch(
        f"/api/v1/quotas/{quotas['t0'].pk}/", {"requests_per_minute": 7}, format="json"
    )
    board.post(
        reverse("dashboard:quota-edit", args=["t1", quotas["t1"].pk]), {"requests_per_minute": "7"}
    )
    staff.post(
        reverse("admin:tenants_quota_change", args=[quotas["t2"].pk]),
        {"tenant": tenants[2].pk, "requests_per_minute": "7"},
    )
    shapes = trail("tenants.Quota", "update")
    same_shape_from({"api", "dashboard", "admin"}, shapes)
    assert shapes["api"] == {"requests_per_minute"}


def test_the_token_command_issues_through_the_service_as_the_cli(
    platform_admin: Actor, capsys: Any
) -> None:
    call_command("createapitoken", platform_admin.user.username, name="terraform")
    event = AuditEvent.objects.get(object_type="tenants.ApiToken", action="issue")
    assert event.via == "cli"
    assert event.changes["name"] == "terraform"
    assert capsys.readouterr().out.strip() not in str(event.changes)


def admin_version_form(version: ModelVersion) -> dict[str, Any]:
    """The admin change form of a version as it stands, ready to post."""
    return {
        "model": version.model_id,
        "label": version.label,
        "weights_source": version.weights_source,
        "weights_revision": "",
        "weights_size_bytes": "",
        "runtime": version.runtime_id,
        "dtype": version.dtype,
        "quantization": "",
        "max_model_len": "",
        "enable_prefix_caching": "on",
        "kv_cache_bytes": str(version.kv_cache_bytes),
        "extra_args": "{}",
        "speculative_config": "",
        "price_input_per_million": str(version.price_input_per_million),
        "price_cached_input_per_million": str(version.price_cached_input_per_million),
        "price_output_per_million": str(version.price_output_per_million),
        "state": version.state,
    }
