"""The node agent's API: node credentials, registration, heartbeats, assignments, reports."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from models_registry.models import EngineRuntime, Model, ModelVersion, VersionState
from nodes import credentials, states
from nodes.models import Deployment, Gpu, Node, NodeState, Worker, WorkerEvent, WorkerState
from nodes.secrets import worker_api_key

pytestmark = pytest.mark.django_db

GIB = 1 << 30
BASE = "/api/agent/v1/"


def agent_client(credential: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {credential}")
    return client


def registration(name: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "address": "10.0.0.5",
        "agent_version": "0.1.0",
        "cpu_count": 16,
        "memory_bytes": 64 * GIB,
        "devices": [
            {
                "index": 0,
                "uuid": f"cpu-{name}",
                "name": "CPU (16 cores)",
                "kind": "cpu",
                "memory_total_bytes": 64 * GIB,
                "memory_used_bytes": 4 * GIB,
            }
        ],
    }
    body.update(overrides)
    return body


@pytest.fixture
def node_a() -> tuple[Node, str]:
    node = Node.objects.create(name="node-a", address="10.0.0.5")
    return node, credentials.issue(node)


@pytest.fixture
def node_b() -> tuple[Node, str]:
    node = Node.objects.create(name="node-b", address="10.0.0.6")
    return node, credentials.issue(node)


@pytest.fixture
def version() -> ModelVersion:
    runtime = EngineRuntime.objects.create(
        name="rt", version="0.32.0", python_path="/opt/vllm/bin/python", environment={"X": "1"}
    )
    model = Model.objects.create(name="tiny-llama")
    return ModelVersion.objects.create(
        model=model,
        label="v1",
        weights_source="/models/tiny",
        weights_size_bytes=GIB,
        runtime=runtime,
        dtype="float32",
        max_model_len=1024,
        extra_args={"gpu-memory-utilization": 0.3, "enforce-eager": True},
        state=VersionState.ACTIVE,
    )


def worker_on(node: Node, version: ModelVersion, name: str = "tiny") -> Worker:
    deployment = Deployment.objects.create(model_version=version, name=name, replicas=0)
    worker = Worker.objects.create(deployment=deployment, node=node)
    gpu = Gpu.objects.create(
        node=node,
        index=Gpu.objects.filter(node=node).count(),
        uuid=f"GPU-{node.name}-{name}",
        name="H200",
        memory_total_bytes=141 * GIB,
    )
    worker.gpus.add(gpu)
    return worker


# --- authentication --------------------------------------------------------------------------


def test_it_rejects_a_request_without_a_credential() -> None:
    assert APIClient().get(BASE + "workers").status_code == 401


def test_it_rejects_a_wrong_node_credential(node_a: tuple[Node, str]) -> None:
    _, credential = node_a
    tampered = credential[:-1] + ("a" if credential[-1] != "a" else "b")
    assert agent_client(tampered).get(BASE + "workers").status_code == 401


def test_an_api_token_is_not_a_node_credential(platform_admin: Any) -> None:
    assert agent_client(platform_admin.token).get(BASE + "workers").status_code == 401


def test_a_rotated_credential_replaces_the_old_one(node_a: tuple[Node, str]) -> None:
    node, old = node_a
    new = credentials.issue(node)
    assert agent_client(old).get(BASE + "workers").status_code == 401
    assert agent_client(new).get(BASE + "workers").status_code == 200


# --- registration ----------------------------------------------------------------------------


def test_registering_records_the_node_facts_and_its_cpu_pseudo_device(
    node_a: tuple[Node, str],
) -> None:
    node, credential = node_a
    response = agent_client(credential).post(BASE + "register", registration("node-a"), "json")
    assert response.status_code == 200, response.json()
    assert response.json()["node"] == {"id": node.pk, "name": "node-a", "state": "ready"}
    node.refresh_from_db()
    assert (node.cpu_count, node.memory_bytes, node.agent_version) == (16, 64 * GIB, "0.1.0")
    assert node.labels == {"accelerator": "cpu"}
    assert node.last_heartbeat_at is not None
    (device,) = node.gpus.all()
    assert (device.kind, device.uuid, device.memory_total_bytes) == ("cpu", "cpu-node-a", 64 * GIB)


def test_registering_again_updates_devices_instead_of_duplicating_them(
    node_a: tuple[Node, str],
) -> None:
    node, credential = node_a
    client = agent_client(credential)
    client.post(BASE + "register", registration("node-a"), "json")
    gpus = [
        {
            "index": i,
            "uuid": f"GPU-{i}",
            "name": "NVIDIA H200",
            "kind": "gpu",
            "memory_total_bytes": 141 * GIB,
        }
        for i in range(2)
    ]
    assert (
        client.post(BASE + "register", registration("node-a", devices=gpus), "json").status_code
        == 200
    )
    assert list(node.gpus.values_list("uuid", "kind")) == [("GPU-0", "gpu"), ("GPU-1", "gpu")]
    node.refresh_from_db()
    # An admin's label is kept; the default one was set at first registration.
    assert node.labels == {"accelerator": "cpu"}


def test_a_credential_registers_only_its_own_node(node_a: tuple[Node, str]) -> None:
    _, credential = node_a
    response = agent_client(credential).post(BASE + "register", registration("node-x"), "json")
    assert response.status_code == 400
    assert response.json() == {"name": ["This credential belongs to node 'node-a'."]}


def test_a_device_of_another_node_is_refused_as_a_field_error(
    node_a: tuple[Node, str], node_b: tuple[Node, str]
) -> None:
    agent_client(node_b[1]).post(BASE + "register", registration("node-b"), "json")
    body = registration("node-a")
    body["devices"][0]["uuid"] = "cpu-node-b"
    response = agent_client(node_a[1]).post(BASE + "register", body, "json")
    assert response.status_code == 400
    assert response.json() == {"devices": ["Device cpu-node-b is registered to another node."]}
    assert not node_a[0].gpus.exists()


def test_malformed_registrations_get_field_errors(node_a: tuple[Node, str]) -> None:
    body = registration("node-a", address="")
    body["devices"][0]["memory_total_bytes"] = -1
    response = agent_client(node_a[1]).post(BASE + "register", body, "json")
    assert response.status_code == 400
    errors = response.json()
    assert set(errors) == {"address", "devices"}


def test_the_bootstrap_token_registers_a_new_node_and_shows_its_credential_once(
    settings: Any,
) -> None:
    settings.NODE_BOOTSTRAP_TOKEN = "bootstrap-secret-for-tests-0123456789"
    response = agent_client(settings.NODE_BOOTSTRAP_TOKEN).post(
        BASE + "register", registration("fresh"), "json"
    )
    assert response.status_code == 201
    credential = response.json()["credential"]
    node = Node.objects.get(name="fresh")
    assert node.credential_hash and credential not in node.credential_hash
    assert agent_client(credential).get(BASE + "workers").status_code == 200
    again = agent_client(settings.NODE_BOOTSTRAP_TOKEN).post(
        BASE + "register", registration("fresh"), "json"
    )
    assert again.status_code == 409
    assert "credential" not in again.json()


def test_the_bootstrap_token_cannot_do_anything_but_register(settings: Any) -> None:
    settings.NODE_BOOTSTRAP_TOKEN = "bootstrap-secret-for-tests-0123456789"
    client = agent_client(settings.NODE_BOOTSTRAP_TOKEN)
    assert client.get(BASE + "workers").status_code == 403
    assert client.post(BASE + "heartbeat", {}, "json").status_code == 403


def test_without_a_bootstrap_token_setting_self_registration_is_off(settings: Any) -> None:
    settings.NODE_BOOTSTRAP_TOKEN = ""
    response = APIClient().post(
        BASE + "register", registration("fresh"), "json", HTTP_AUTHORIZATION="Bearer "
    )
    assert response.status_code == 401
    assert not Node.objects.filter(name="fresh").exists()


# --- heartbeat -------------------------------------------------------------------------------


def test_a_heartbeat_records_device_usage(node_a: tuple[Node, str]) -> None:
    node, credential = node_a
    client = agent_client(credential)
    client.post(BASE + "register", registration("node-a"), "json")
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=timezone.now() - timedelta(hours=1))
    usage = {"devices": [{"uuid": "cpu-node-a", "memory_used_bytes": 9 * GIB}]}
    assert client.post(BASE + "heartbeat", usage, "json").status_code == 200
    node.refresh_from_db()
    assert timezone.now() - node.last_heartbeat_at < timedelta(seconds=5)  # type: ignore[operator]
    assert node.gpus.get().memory_used_bytes == 9 * GIB


def test_a_heartbeat_brings_a_lost_node_back(
    node_a: tuple[Node, str], django_capture_on_commit_callbacks: Any
) -> None:
    node, credential = node_a
    Node.objects.filter(pk=node.pk).update(state=NodeState.LOST, state_reason="no heartbeat")
    with django_capture_on_commit_callbacks() as callbacks:
        response = agent_client(credential).post(BASE + "heartbeat", {}, "json")
    assert response.json()["state"] == "ready"
    node.refresh_from_db()
    assert (node.state, node.state_reason) == ("ready", "heartbeat resumed")
    assert callbacks, "the scheduler should run once the node is back"


# --- assignments -----------------------------------------------------------------------------


def test_the_feed_lists_the_nodes_workers_with_their_command_inputs_and_key(
    node_a: tuple[Node, str], version: ModelVersion
) -> None:
    node, credential = node_a
    worker = worker_on(node, version)
    response = agent_client(credential).get(BASE + "workers")
    assert response.status_code == 200
    (spec,) = response.json()["workers"]
    assert spec["id"] == worker.pk
    assert spec["served_model_name"] == "tiny-llama"
    assert spec["env"] == {"X": "1"}
    assert spec["gpu_uuids"] == ["GPU-node-a-tiny"]
    assert spec["device_kind"] == "gpu"
    # The whole command line but --host and --port, which the agent picks.
    command = spec["command"]
    assert command[:7] == [
        "/opt/vllm/bin/python",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "/models/tiny",
        "--served-model-name",
        "tiny-llama",
    ]
    assert command[7:11] == ["--dtype", "float32", "--max-model-len", "1024"]
    # extra_args follow, in the order the database keeps them (jsonb reorders keys).
    rest = command[11:]
    assert sorted(rest) == ["--enforce-eager", "--gpu-memory-utilization", "0.3"]
    assert rest[rest.index("--gpu-memory-utilization") + 1] == "0.3"
    assert spec["api_key"] == worker_api_key(worker.pk)
    assert spec["desired_state"] == "running"


def test_the_fingerprint_changes_when_the_version_does(
    node_a: tuple[Node, str], version: ModelVersion
) -> None:
    node, credential = node_a
    worker_on(node, version)
    client = agent_client(credential)
    before = client.get(BASE + "workers").json()["workers"][0]["fingerprint"]
    version.max_model_len = 512
    version.save()
    assert client.get(BASE + "workers").json()["workers"][0]["fingerprint"] != before


def test_a_node_never_sees_another_nodes_workers(
    node_a: tuple[Node, str], node_b: tuple[Node, str], version: ModelVersion
) -> None:
    theirs = worker_on(node_b[0], version, name="theirs")
    client = agent_client(node_a[1])
    assert client.get(BASE + "workers").json() == {"workers": []}
    response = client.post(BASE + f"workers/{theirs.pk}/transition", {"state": "starting"}, "json")
    assert response.status_code == 404
    assert client.post(BASE + f"workers/{theirs.pk}/logs", {"tail": "x"}, "json").status_code == 404
    theirs.refresh_from_db()
    assert theirs.state == WorkerState.PENDING


def test_stopped_workers_leave_the_feed(node_a: tuple[Node, str], version: ModelVersion) -> None:
    node, credential = node_a
    worker = worker_on(node, version)
    states.transition(worker, WorkerState.STOPPED, "test")
    assert agent_client(credential).get(BASE + "workers").json() == {"workers": []}


# --- transitions and logs --------------------------------------------------------------------


def test_a_reported_transition_moves_the_worker_and_records_an_event(
    node_a: tuple[Node, str], version: ModelVersion
) -> None:
    node, credential = node_a
    worker = worker_on(node, version)
    client = agent_client(credential)
    url = BASE + f"workers/{worker.pk}/transition"
    body = {"state": "starting", "reason": "launched", "pid": 4242, "port": 8100}
    assert client.post(url, body, "json").json()["moved"] is True
    # Repeating a report is harmless.
    assert client.post(url, body, "json").json()["moved"] is False
    client.post(url, {"state": "ready", "reason": "answering"}, "json")
    worker.refresh_from_db()
    assert (worker.state, worker.pid, worker.port) == ("ready", 4242, 8100)
    assert worker.ready_at is not None
    assert list(worker.events.values_list("from_state", "to_state")) == [
        ("pending", "starting"),
        ("starting", "ready"),
    ]


def test_an_illegal_transition_is_refused_in_words(
    node_a: tuple[Node, str], version: ModelVersion
) -> None:
    node, credential = node_a
    worker = worker_on(node, version)
    response = agent_client(credential).post(
        BASE + f"workers/{worker.pk}/transition", {"state": "ready"}, "json"
    )
    assert response.status_code == 409
    assert response.json()["state"] == [
        f"worker {worker.pk} cannot go from pending to ready; "
        "allowed from pending: draining, starting, stopped"
    ]
    assert not WorkerEvent.objects.exists()


def test_an_unknown_state_is_a_field_error(node_a: tuple[Node, str], version: ModelVersion) -> None:
    worker = worker_on(node_a[0], version)
    response = agent_client(node_a[1]).post(
        BASE + f"workers/{worker.pk}/transition", {"state": "exploded", "port": 0}, "json"
    )
    assert response.status_code == 400
    assert set(response.json()) == {"state", "port"}


def test_two_live_workers_of_a_node_cannot_share_a_port(
    node_a: tuple[Node, str], version: ModelVersion
) -> None:
    node, credential = node_a
    first, second = worker_on(node, version, "one"), worker_on(node, version, "two")
    client = agent_client(credential)
    start = {"state": "starting", "port": 8100}
    assert client.post(BASE + f"workers/{first.pk}/transition", start, "json").status_code == 200
    response = client.post(BASE + f"workers/{second.pk}/transition", start, "json")
    assert response.status_code == 409
    assert response.json() == {"port": ["Another live worker on this node already uses this port."]}
    second.refresh_from_db()
    assert second.state == WorkerState.PENDING


def test_failures_carry_exit_code_and_log_tail_with_the_key_redacted(
    node_a: tuple[Node, str], version: ModelVersion
) -> None:
    node, credential = node_a
    worker = worker_on(node, version)
    key = worker_api_key(worker.pk)
    client = agent_client(credential)
    url = BASE + f"workers/{worker.pk}/transition"
    client.post(url, {"state": "starting", "port": 8100}, "json")
    tail = f"args: api_key={key}\nRuntimeError: out of memory\n"
    response = client.post(
        url, {"state": "failed", "reason": "exited", "exit_code": -9, "log_tail": tail}, "json"
    )
    assert response.status_code == 200
    worker.refresh_from_db()
    assert (worker.state, worker.last_exit_code, worker.last_error) == ("failed", -9, "exited")
    assert key not in worker.log_tail
    assert "api_key=[engine key redacted]" in worker.log_tail
    assert worker.events.last().exit_code == -9  # type: ignore[union-attr]


def test_restarting_a_failed_worker_counts_the_restart(
    node_a: tuple[Node, str], version: ModelVersion
) -> None:
    node, credential = node_a
    worker = worker_on(node, version)
    client = agent_client(credential)
    url = BASE + f"workers/{worker.pk}/transition"
    for state in ("starting", "failed", "starting", "failed", "crash_looping", "starting"):
        assert client.post(url, {"state": state}, "json").status_code == 200, state
    worker.refresh_from_db()
    assert worker.restarts == 2


def test_an_uploaded_log_tail_is_kept_without_the_key(
    node_a: tuple[Node, str], version: ModelVersion
) -> None:
    node, credential = node_a
    worker = worker_on(node, version)
    key = worker_api_key(worker.pk)
    response = agent_client(credential).post(
        BASE + f"workers/{worker.pk}/logs", {"tail": f"INFO ready\nkey {key}\n"}, "json"
    )
    assert response.status_code == 204
    worker.refresh_from_db()
    assert worker.log_tail == "INFO ready\nkey [engine key redacted]\n"


# --- the state machine itself ----------------------------------------------------------------


def test_a_stopped_worker_never_comes_back(node_a: tuple[Node, str], version: ModelVersion) -> None:
    worker = worker_on(node_a[0], version)
    states.transition(worker, WorkerState.STOPPED, "done")
    for target in WorkerState.values:
        if target != WorkerState.STOPPED:
            with pytest.raises(states.IllegalTransition):
                states.transition(worker, target)


def test_every_state_but_stopped_can_reach_stopped() -> None:
    for state in WorkerState.values:
        if state != WorkerState.STOPPED:
            assert states.can_transition(state, WorkerState.STOPPED), state


def test_a_transition_loses_cleanly_when_another_writer_moved_the_worker_first(
    node_a: tuple[Node, str], version: ModelVersion
) -> None:
    worker = worker_on(node_a[0], version)
    Worker.objects.filter(pk=worker.pk).update(state=WorkerState.STOPPED)
    with pytest.raises(states.IllegalTransition):
        states.transition(worker, WorkerState.STARTING)


# --- createnode ------------------------------------------------------------------------------


def test_createnode_prints_a_credential_that_is_stored_only_as_a_hash() -> None:
    out = StringIO()
    call_command("createnode", "gpu-7", "--address", "10.1.2.3", "--quiet", stdout=out)
    credential = out.getvalue().strip()
    assert credential.startswith("cpn-")
    node = Node.objects.get(name="gpu-7")
    assert credentials.authenticate(credential) == node
    secret_part = credential[len(node.credential_prefix or "") :]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM nodes_node")
        assert not any(secret_part in str(value) for row in cursor.fetchall() for value in row)


def test_createnode_refuses_an_existing_node_unless_rotating(node_a: tuple[Node, str]) -> None:
    with pytest.raises(CommandError, match="pass --rotate"):
        call_command("createnode", "node-a", "--address", "10.0.0.5")
    out = StringIO()
    call_command("createnode", "node-a", "--rotate", "--quiet", stdout=out)
    assert credentials.authenticate(out.getvalue().strip()) == node_a[0]
    assert credentials.authenticate(node_a[1]) is None


def test_createnode_validates_the_name() -> None:
    with pytest.raises(CommandError, match="name"):
        call_command("createnode", "Not_A_Slug", "--address", "10.0.0.1")
    assert not Node.objects.exists()
