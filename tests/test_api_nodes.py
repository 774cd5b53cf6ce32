"""Nodes' agent credentials and workers' engine keys: never shown after creation, never logged."""

from __future__ import annotations

import json
import logging

import pytest

from controlplane.models import AuditEvent
from nodes.models import Node
from nodes.secrets import worker_api_key
from tenants import keys
from tests import factories
from tests.conftest import Actor

pytestmark = pytest.mark.django_db


def test_creating_a_node_returns_its_credential_once_stored_as_prefix_and_hash(
    platform_admin: Actor,
) -> None:
    response = platform_admin.client.post(
        "/api/v1/nodes/", {"name": "gpu-1", "address": "10.0.0.7"}, format="json"
    )
    assert response.status_code == 201, response.data
    credential = response.data["credential"]
    assert keys.looks_like(credential, keys.NODE_CREDENTIAL_MARKER)
    node = Node.objects.get(pk=response.data["id"])
    assert node.credential_prefix == keys.prefix_of(credential, keys.NODE_CREDENTIAL_MARKER)
    assert keys.matches(credential, node.credential_hash)
    detail = platform_admin.client.get(f"/api/v1/nodes/{node.pk}/")
    listing = platform_admin.client.get("/api/v1/nodes/")
    for body in (detail.data, listing.data):
        text = json.dumps(body, default=str)
        assert credential not in text
        assert node.credential_hash not in text
    assert "credential" not in detail.data


def test_rotating_a_node_credential_replaces_the_old_one(platform_admin: Actor) -> None:
    created = platform_admin.client.post(
        "/api/v1/nodes/", {"name": "gpu-1", "address": "10.0.0.7"}, format="json"
    ).data
    response = platform_admin.client.post(f"/api/v1/nodes/{created['id']}/rotate-credential/")
    assert response.status_code == 200
    node = Node.objects.get(pk=created["id"])
    assert keys.matches(response.data["credential"], node.credential_hash)
    assert not keys.matches(created["credential"], node.credential_hash)
    trail = json.dumps(list(AuditEvent.objects.values("changes")))
    assert created["credential"] not in trail and response.data["credential"] not in trail
    assert node.credential_hash not in trail
    assert AuditEvent.objects.filter(action="rotate", object_id=str(node.pk)).exists()


def test_a_workers_engine_key_is_never_in_the_api_or_the_logs(
    platform_admin: Actor, caplog: pytest.LogCaptureFixture
) -> None:
    worker = factories.worker(port=8100, state="ready")
    secret = worker_api_key(worker.pk)
    caplog.set_level(logging.DEBUG)
    detail = platform_admin.client.get(f"/api/v1/workers/{worker.pk}/")
    listing = platform_admin.client.get("/api/v1/workers/")
    schema = platform_admin.client.get("/api/schema/")
    assert detail.status_code == listing.status_code == 200
    for body in (json.dumps(detail.data), json.dumps(listing.data), schema.content.decode()):
        assert secret not in body
        assert "engine_api_key" not in body
    assert secret not in caplog.text


def test_gpus_are_listed_per_node(platform_admin: Actor) -> None:
    node = factories.node()
    factories.gpu(node)
    factories.gpu(node)
    factories.gpu()
    response = platform_admin.client.get("/api/v1/gpus/", {"node_name": node.name})
    assert [row["index"] for row in response.data["results"]] == [0, 1]


def test_cordoning_a_node_is_a_patch_of_its_state_and_is_audited(platform_admin: Actor) -> None:
    node = factories.node()
    response = platform_admin.client.patch(
        f"/api/v1/nodes/{node.pk}/",
        {"state": "cordoned", "state_reason": "maintenance"},
        format="json",
    )
    assert response.status_code == 200
    # The same change as POST …/cordon/ and the dashboard's button: one action name.
    event = AuditEvent.objects.get(action="cordon", object_id=str(node.pk))
    assert event.changes["state"] == ["ready", "cordoned"]
    assert event.via == "api"
    assert event.actor == platform_admin.user


def test_agent_reported_fields_are_read_only(platform_admin: Actor) -> None:
    node = factories.node()
    response = platform_admin.client.patch(
        f"/api/v1/nodes/{node.pk}/",
        {"agent_version": "9.9", "cpu_count": 512, "credential_prefix": "cpn-forged0"},
        format="json",
    )
    assert response.status_code == 200
    node.refresh_from_db()
    assert (node.agent_version, node.cpu_count, node.credential_prefix) == ("", 0, None)
