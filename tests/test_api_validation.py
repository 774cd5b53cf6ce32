"""Bad input gets field-level 400s, never a 500 and never a half-written record."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.models import AuditEvent
from models_registry.models import EngineRuntime, ModelVersion
from nodes.models import Deployment, Node
from tenants.models import ApiKey, Tenant
from tests import factories
from tests.conftest import Actor

pytestmark = pytest.mark.django_db


def post(actor: Actor, endpoint: str, payload: dict[str, Any]) -> Any:
    return actor.client.post(f"/api/v1/{endpoint}/", payload, format="json")


def version_payload(**overrides: Any) -> dict[str, Any]:
    return {
        "model": factories.model().pk,
        "runtime": factories.runtime().pk,
        "label": "v1",
        "weights_source": "/models/tiny-llama",
    } | overrides


@pytest.mark.parametrize(
    "price_field",
    ["price_input_per_million", "price_cached_input_per_million", "price_output_per_million"],
)
def test_a_negative_price_is_a_field_error(platform_admin: Actor, price_field: str) -> None:
    response = post(platform_admin, "model-versions", version_payload(**{price_field: "-0.01"}))
    assert response.status_code == 400
    assert list(response.data) == [price_field]
    assert not ModelVersion.objects.exists()


def test_unknown_and_reserved_vllm_arguments_are_reported_one_by_one(
    platform_admin: Actor,
) -> None:
    extra = {
        "max-num-seqs": 8,  # fine
        "port": 9000,  # reserved: the node agent sets it
        "api_key": "x",  # reserved, in the underscore spelling
        "frobnicate": True,  # unknown
        "gpu-memory-utilization": 3,  # out of range
    }
    response = post(platform_admin, "model-versions", version_payload(extra_args=extra))
    assert response.status_code == 400
    problems = response.data["extra_args"]
    assert set(problems) == {"port", "api_key", "frobnicate", "gpu-memory-utilization"}
    assert "set by the control plane" in str(problems["port"])
    assert "not an allowed" in str(problems["frobnicate"])
    assert not ModelVersion.objects.exists()


def test_extra_args_must_be_an_object(platform_admin: Actor) -> None:
    response = post(platform_admin, "model-versions", version_payload(extra_args=["--seed", "1"]))
    assert response.status_code == 400
    assert "extra_args" in response.data


def test_speculative_config_must_be_an_object(platform_admin: Actor) -> None:
    response = post(platform_admin, "model-versions", version_payload(speculative_config=[1]))
    assert response.status_code == 400
    assert "speculative_config" in response.data


def test_a_duplicate_version_label_of_a_model_is_a_field_error(platform_admin: Actor) -> None:
    existing = factories.version(label="v1")
    payload = version_payload(model=existing.model.pk)
    response = post(platform_admin, "model-versions", payload)
    assert response.status_code == 400
    assert "non_field_errors" in response.data or "label" in response.data


def test_a_duplicate_tenant_slug_is_a_field_error(platform_admin: Actor, tenant_a: Tenant) -> None:
    response = post(platform_admin, "tenants", {"slug": tenant_a.slug, "name": "Again"})
    assert response.status_code == 400
    assert list(response.data) == ["slug"]


@pytest.mark.parametrize("slug", ["Upper", "-dash", "has space", "x" * 64, ""])
def test_a_malformed_slug_is_a_field_error(platform_admin: Actor, slug: str) -> None:
    response = post(platform_admin, "tenants", {"slug": slug, "name": "Bad"})
    assert response.status_code == 400
    assert "slug" in response.data


def test_duplicate_model_node_runtime_and_deployment_names_are_field_errors(
    platform_admin: Actor,
) -> None:
    model = factories.model()
    node = factories.node()
    runtime = factories.runtime()
    deployment = factories.deployment()
    cases = {
        "models": {"name": model.name},
        "nodes": {"name": node.name, "address": "10.0.0.9"},
        "engine-runtimes": {"name": runtime.name, "version": "1", "python_path": "/usr/bin/py"},
        "deployments": {"name": deployment.name, "model_version": factories.version().pk},
    }
    for endpoint, payload in cases.items():
        response = post(platform_admin, endpoint, payload)
        assert response.status_code == 400, endpoint
        assert "name" in response.data, endpoint


def test_a_model_name_with_spaces_is_refused(platform_admin: Actor) -> None:
    response = post(platform_admin, "models", {"name": "my model"})
    assert response.status_code == 400
    assert "name" in response.data


def test_negative_quota_limits_are_field_errors(platform_admin: Actor, tenant_a: Tenant) -> None:
    response = post(
        platform_admin,
        "quotas",
        {"tenant": tenant_a.pk, "requests_per_minute": -1, "cost_per_month": "-5"},
    )
    assert response.status_code == 400
    assert set(response.data) == {"requests_per_minute", "cost_per_month"}


@pytest.mark.parametrize(
    "labels",
    [["zone", "a"], {"zone": 1}, {"zone": {"nested": "x"}}, "zone=a"],
    ids=["list", "number", "nested", "string"],
)
def test_node_labels_and_label_selectors_must_be_objects_of_strings(
    platform_admin: Actor, labels: Any
) -> None:
    node = post(platform_admin, "nodes", {"name": "n1", "address": "10.0.0.1", "labels": labels})
    assert node.status_code == 400
    assert list(node.data) == ["labels"]
    version = factories.version()
    deployment = post(
        platform_admin,
        "deployments",
        {"name": "d1", "model_version": version.pk, "label_selector": labels},
    )
    assert deployment.status_code == 400
    assert list(deployment.data) == ["label_selector"]
    assert not Node.objects.exists() and not Deployment.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [("replicas", -1), ("replicas", 257), ("gpus_per_replica", 0), ("gpus_per_replica", 17)],
)
def test_deployment_sizes_are_bounded(platform_admin: Actor, field: str, value: int) -> None:
    version = factories.version()
    response = post(
        platform_admin, "deployments", {"name": "d1", "model_version": version.pk, field: value}
    )
    assert response.status_code == 400
    assert list(response.data) == [field]


def test_scaling_a_deployment_is_a_patch_of_replicas(platform_admin: Actor) -> None:
    deployment = factories.deployment(replicas=1)
    response = platform_admin.client.patch(
        f"/api/v1/deployments/{deployment.pk}/", {"replicas": 0}, format="json"
    )
    assert response.status_code == 200
    deployment.refresh_from_db()
    assert deployment.replicas == 0
    too_many = platform_admin.client.patch(
        f"/api/v1/deployments/{deployment.pk}/", {"replicas": 1000}, format="json"
    )
    assert too_many.status_code == 400
    deployment.refresh_from_db()
    assert deployment.replicas == 0


def test_a_retired_version_cannot_be_deployed(platform_admin: Actor) -> None:
    version = factories.version(state="retired")
    response = post(platform_admin, "deployments", {"name": "d1", "model_version": version.pk})
    assert response.status_code == 400
    assert list(response.data) == ["model_version"]


def test_runtime_environment_must_be_strings_and_python_path_absolute(
    platform_admin: Actor,
) -> None:
    response = post(
        platform_admin,
        "engine-runtimes",
        {"name": "r", "version": "1", "python_path": "python", "environment": {"A": 1}},
    )
    assert response.status_code == 400
    assert set(response.data) == {"python_path", "environment"}
    assert not EngineRuntime.objects.exists()


def test_a_user_role_must_match_its_tenant(platform_admin: Actor, tenant_a: Tenant) -> None:
    platform_with_tenant = post(
        platform_admin, "users", {"username": "p", "role": "platform_admin", "tenant": tenant_a.pk}
    )
    tenant_role_without_tenant = post(
        platform_admin, "users", {"username": "q", "role": "tenant_admin"}
    )
    weak_password = post(
        platform_admin,
        "users",
        {"username": "r", "role": "tenant_admin", "tenant": tenant_a.pk, "password": "123"},
    )
    for response in (platform_with_tenant, tenant_role_without_tenant):
        assert response.status_code == 400
        assert list(response.data) == ["tenant"]
    assert weak_password.status_code == 400
    assert list(weak_password.data) == ["password"]


def test_deleting_a_version_that_is_deployed_is_a_409_not_a_500(platform_admin: Actor) -> None:
    deployment = factories.deployment()
    response = platform_admin.client.delete(
        f"/api/v1/model-versions/{deployment.model_version_id}/"
    )
    assert response.status_code == 409
    assert "deployments" in response.data["detail"]
    assert ModelVersion.objects.filter(pk=deployment.model_version_id).exists()
    # The audit event recorded before the refused delete was rolled back with it.
    assert not AuditEvent.objects.filter(action="delete").exists()


def test_deleting_a_tenant_with_usage_is_a_409(platform_admin: Actor, tenant_a: Tenant) -> None:
    factories.usage(tenant_a)
    response = platform_admin.client.delete(f"/api/v1/tenants/{tenant_a.pk}/")
    assert response.status_code == 409
    assert Tenant.objects.filter(pk=tenant_a.pk).exists()


def test_malformed_json_is_a_400(platform_admin: Actor) -> None:
    response = platform_admin.client.post(
        "/api/v1/tenants/", data="{not json", content_type="application/json"
    )
    assert response.status_code == 400


def test_a_failed_write_leaves_no_key_behind(admin_a: Actor, tenant_a: Tenant) -> None:
    """allowed_models are set after the key row is inserted; a bad model id must undo both."""
    response = admin_a.client.post(
        "/api/v1/api-keys/", {"name": "prod", "allowed_models": [987654]}, format="json"
    )
    assert response.status_code == 400
    assert "allowed_models" in response.data
    assert not ApiKey.objects.exists()
    assert not AuditEvent.objects.exists()
