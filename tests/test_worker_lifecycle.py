"""Restart and drain a worker, cordon, drain and uncordon a node, scale a deployment: one
function each (nodes.services), the same rules and the same audit event from every face.
The real restart of a real engine is in test_node_agent.py."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from controlplane import audit
from controlplane.models import AuditEvent
from nodes import services
from nodes.agent_api.views import assignment
from nodes.models import Node, NodeState, Worker, WorkerEvent, WorkerState
from tests import factories
from tests.conftest import Actor

pytestmark = pytest.mark.django_db


def browser(actor: Actor) -> Client:
    client = Client()
    client.force_login(actor.user)
    return client


@pytest.fixture
def staff() -> Client:
    get_user_model().objects.create_superuser(username="boss", password="pw-boss-12345")
    client = Client()
    assert client.login(username="boss", password="pw-boss-12345")
    return client


def trail(obj: Any) -> list[tuple[str, str]]:
    return list(
        AuditEvent.objects.filter(object_type=obj._meta.label, object_id=str(obj.pk))
        .order_by("id")
        .values_list("action", "via")
    )


# --- workers -------------------------------------------------------------------------------


def test_a_restart_changes_the_fingerprint_and_leaves_the_state_to_the_agent() -> None:
    worker = factories.worker(port=8100, pid=4242, state=WorkerState.READY)
    before = assignment(worker).fingerprint
    services.restart_worker(worker, origin=audit.CLI)
    worker.refresh_from_db()
    # Nothing but the agent moves the state: it sees the new fingerprint, stops the engine,
    # reports failed, starts a new one (test_node_agent shows it with a real engine).
    assert (worker.state, worker.pid, worker.generation) == (WorkerState.READY, 4242, 1)
    assert assignment(worker).fingerprint != before
    assert not WorkerEvent.objects.filter(worker=worker).exists()
    assert trail(worker) == [("restart", "cli")]
    assert AuditEvent.objects.get(action="restart").changes == {"generation": [0, 1]}


@pytest.mark.parametrize("state", [WorkerState.DRAINING, WorkerState.STOPPED])
def test_a_worker_on_its_way_out_cannot_be_restarted(state: str) -> None:
    worker = factories.worker(state=state)
    with pytest.raises(services.Refused, match="cannot be restarted"):
        services.restart_worker(worker)
    assert Worker.objects.get(pk=worker.pk).generation == 0
    assert not AuditEvent.objects.exists()


def test_a_drain_asks_the_agent_to_stop_the_worker() -> None:
    worker = factories.worker(state=WorkerState.READY)
    services.drain_worker(worker)
    worker.refresh_from_db()
    assert (worker.desired_state, worker.state) == ("stopped", WorkerState.READY)
    assert assignment(worker).desired_state == "stopped"
    with pytest.raises(services.Refused, match="cannot be restarted"):
        services.restart_worker(worker)


def test_the_dashboard_restarts_and_drains_through_the_services(platform_admin: Actor) -> None:
    worker = factories.worker(port=8100, state=WorkerState.FAILED)
    client = browser(platform_admin)
    url = reverse("dashboard:worker-action", args=[worker.pk, "restart"])
    assert client.post(url, headers={"HX-Request": "true"}).status_code == 200
    client.post(reverse("dashboard:worker-action", args=[worker.pk, "drain"]))
    worker.refresh_from_db()
    assert (worker.generation, worker.desired_state, worker.state) == (1, "stopped", "failed")
    assert trail(worker) == [("restart", "dashboard"), ("drain", "dashboard")]
    refused = client.post(url)
    assert refused.status_code == 409
    assert "cannot be restarted" in refused.content.decode()
    # On the node page (htmx) the refusal is said above the refreshed block, which no longer
    # offers a restart: htmx would show nothing of a bare 409.
    shown = client.post(url, headers={"HX-Request": "true"})
    assert shown.status_code == 200
    page = shown.content.decode()
    assert 'id="node-refusal"' in page and "cannot be restarted" in page
    assert reverse("dashboard:worker-action", args=[worker.pk, "restart"]) not in page
    assert trail(worker) == [("restart", "dashboard"), ("drain", "dashboard")]


def test_unknown_dashboard_actions_are_not_found(platform_admin: Actor) -> None:
    worker = factories.worker()
    client = browser(platform_admin)
    worker_url = reverse("dashboard:worker-action", args=[worker.pk, "explode"])
    node_url = reverse("dashboard:node-action", args=[worker.node.name, "explode"])  # type: ignore[union-attr]
    assert client.post(worker_url).status_code == 404
    assert client.post(node_url).status_code == 404
    assert not AuditEvent.objects.exists()


def test_the_rest_api_restarts_and_drains_a_worker(platform_admin: Actor) -> None:
    worker = factories.worker(state=WorkerState.READY)
    restarted = platform_admin.client.post(f"/api/v1/workers/{worker.pk}/restart/")
    assert restarted.status_code == 202, restarted.data
    assert restarted.data["generation"] == 1
    drained = platform_admin.client.post(f"/api/v1/workers/{worker.pk}/drain/")
    assert drained.status_code == 202
    assert drained.data["desired_state"] == "stopped"
    refused = platform_admin.client.post(f"/api/v1/workers/{worker.pk}/restart/")
    assert refused.status_code == 409
    assert "cannot be restarted" in refused.data["detail"]
    assert trail(worker) == [("restart", "api"), ("drain", "api")]


def test_only_platform_admins_restart_workers(admin_a: Actor) -> None:
    worker = factories.worker()
    assert admin_a.client.post(f"/api/v1/workers/{worker.pk}/restart/").status_code == 403
    assert Worker.objects.get(pk=worker.pk).generation == 0


def test_the_admin_restarts_and_drains_with_actions_and_cannot_edit_state_port_or_pid(
    staff: Client,
) -> None:
    worker = factories.worker(port=8100, pid=77, state=WorkerState.READY)
    changelist = reverse("admin:nodes_worker_changelist")
    for action in ("restart", "drain"):
        staff.post(changelist, {"action": action, "_selected_action": [worker.pk]})
    worker.refresh_from_db()
    assert (worker.generation, worker.desired_state) == (1, "stopped")
    assert trail(worker) == [("restart", "admin"), ("drain", "admin")]

    change = reverse("admin:nodes_worker_change", args=[worker.pk])
    form = staff.get(change).content.decode()
    for field in ("state", "port", "pid"):
        assert f'name="{field}"' not in form
    staff.post(
        change,
        {"deployment": worker.deployment_id, "node": worker.node_id, "state": "pending"},
    )
    worker.refresh_from_db()
    assert (worker.state, worker.port, worker.pid) == (WorkerState.READY, 8100, 77)


# --- nodes ---------------------------------------------------------------------------------


def test_node_actions_are_the_same_change_on_every_face(
    platform_admin: Actor, staff: Client
) -> None:
    node = factories.node()
    browser(platform_admin).post(reverse("dashboard:node-action", args=[node.name, "cordon"]))
    response = platform_admin.client.post(
        f"/api/v1/nodes/{node.pk}/drain/", {"reason": "new disks"}, format="json"
    )
    assert response.status_code == 200, response.data
    assert (response.data["state"], response.data["state_reason"]) == ("draining", "new disks")
    staff.post(
        reverse("admin:nodes_node_changelist"),
        {"action": "uncordon", "_selected_action": [node.pk]},
    )
    node.refresh_from_db()
    assert node.state == NodeState.READY
    assert trail(node) == [("cordon", "dashboard"), ("drain", "api"), ("uncordon", "admin")]


def test_a_patch_of_a_nodes_state_is_a_cordon_and_other_fields_an_update(
    platform_admin: Actor,
) -> None:
    node = factories.node()
    response = platform_admin.client.patch(
        f"/api/v1/nodes/{node.pk}/",
        {"state": "cordoned", "state_reason": "maintenance", "labels": {"zone": "a"}},
        format="json",
    )
    assert response.status_code == 200, response.data
    assert (response.data["state"], response.data["labels"]) == ("cordoned", {"zone": "a"})
    node.refresh_from_db()
    assert (node.state, node.state_reason, node.labels) == (
        "cordoned",
        "maintenance",
        {"zone": "a"},
    )
    assert trail(node) == [("cordon", "api"), ("update", "api")]
    cordon = AuditEvent.objects.get(action="cordon")
    assert cordon.changes == {"state": ["ready", "cordoned"], "state_reason": "maintenance"}


def test_nobody_sets_a_node_lost_or_brings_a_lost_one_back_by_hand(
    platform_admin: Actor,
) -> None:
    node = factories.node()
    response = platform_admin.client.patch(
        f"/api/v1/nodes/{node.pk}/", {"state": "lost"}, format="json"
    )
    assert response.status_code == 400
    assert "cannot be set to lost" in response.data["state"][0]
    Node.objects.filter(pk=node.pk).update(state=NodeState.LOST)
    back = platform_admin.client.post(f"/api/v1/nodes/{node.pk}/uncordon/")
    assert back.status_code == 400
    assert "when its agent is heard again" in back.data["state"][0]
    assert Node.objects.get(pk=node.pk).state == NodeState.LOST


# --- deployments ---------------------------------------------------------------------------


def test_scaling_from_the_dashboard_is_one_audited_scale(platform_admin: Actor) -> None:
    deployment = factories.deployment(replicas=1)
    response = browser(platform_admin).post(
        reverse("dashboard:deployment-update", args=[deployment.pk]),
        {"replicas": 3, "traffic_weight": 50, "desired_state": "running"},
    )
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert (deployment.replicas, deployment.traffic_weight) == (3, 50)
    event = AuditEvent.objects.get(object_type="nodes.Deployment")
    assert (event.action, event.via) == ("scale", "dashboard")
    assert event.changes == {"replicas": [1, 3], "traffic_weight": [100, 50]}


def test_a_scale_that_changes_nothing_leaves_no_trace() -> None:
    deployment = factories.deployment(replicas=2)
    services.scale_deployment(deployment, replicas=2, desired_state="running")
    assert not AuditEvent.objects.exists()
