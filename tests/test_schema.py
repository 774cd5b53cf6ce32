"""The OpenAPI schema generates without a single warning and lists every resource."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from django.contrib.staticfiles import finders
from django.core.management import call_command
from rest_framework.test import APIClient

from controlplane.api.urls import router

pytestmark = pytest.mark.django_db

RESOURCES = [
    "tenants",
    "users",
    "api-keys",
    "api-tokens",
    "quotas",
    "engine-runtimes",
    "models",
    "model-versions",
    "grants",
    "nodes",
    "gpus",
    "deployments",
    "workers",
    "usage-records",
    "audit-events",
]


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory, django_db_blocker: object) -> dict:
    path: Path = tmp_path_factory.mktemp("schema") / "schema.yaml"
    # --fail-on-warn turns any warning (an unresolvable field, a missing type) into an error.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def test_the_schema_lists_every_resource(schema: dict) -> None:
    registered = {prefix for prefix, _, _ in router.registry}
    assert registered == set(RESOURCES)
    for resource in RESOURCES:
        assert f"/api/v1/{resource}/" in schema["paths"], resource
        assert f"/api/v1/{resource}/{{id}}/" in schema["paths"], resource


def test_the_schema_documents_the_key_actions_and_the_plaintext_once(schema: dict) -> None:
    paths = schema["paths"]
    assert "post" in paths["/api/v1/api-keys/{id}/rotate/"]
    assert "post" in paths["/api/v1/api-keys/{id}/revoke/"]
    assert "post" in paths["/api/v1/nodes/{id}/rotate-credential/"]
    components = schema["components"]["schemas"]
    assert "key" in components["ApiKeyCreated"]["properties"]
    assert "key" not in components["ApiKey"]["properties"]
    assert "credential" in components["NodeCreated"]["properties"]


def test_no_secret_hash_or_engine_key_is_part_of_any_schema(schema: dict) -> None:
    text = yaml.safe_dump(schema)
    for secret in ("hashed_key", "hashed_token", "credential_hash", "engine_api_key"):
        assert secret not in text


def test_the_schema_declares_bearer_token_auth(schema: dict) -> None:
    scheme = schema["components"]["securitySchemes"]["apiToken"]
    assert scheme == scheme | {"type": "http", "scheme": "bearer"}


def test_the_schema_endpoint_serves_it() -> None:
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert "/api/v1/deployments/" in response.json()["paths"]


def test_the_docs_page_renders_with_assets_served_here_not_from_a_cdn() -> None:
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html
    assert "cdn.jsdelivr.net" not in html
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
