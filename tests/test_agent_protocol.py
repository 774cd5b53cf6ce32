"""The control plane ↔ agent contract and the one vLLM command builder (no engine needed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gateway.snapshot import load_routes
from models_registry import engine_args, engine_command
from nodes.agent import protocol
from nodes.agent_api.serializers import TransitionSerializer
from nodes.agent_api.views import assignment
from nodes.models import DesiredState, DeviceKind, WorkerState
from tests import factories

ROOT = Path(__file__).resolve().parent.parent


def test_the_models_state_names_are_the_protocols() -> None:
    assert tuple(WorkerState.values) == protocol.WORKER_STATES
    assert tuple(DesiredState.values) == protocol.DESIRED_STATES
    assert set(DeviceKind.values) == {protocol.GPU, protocol.CPU}


def test_a_report_has_exactly_the_fields_the_agent_api_accepts() -> None:
    assert set(protocol.REPORT_FIELDS) == set(TransitionSerializer().fields)


def test_the_agent_package_imports_nothing_of_django_or_the_control_plane() -> None:
    allowed_ours = {"nodes.agent"}
    for path in (ROOT / "nodes" / "agent").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                assert top not in {"django", "rest_framework", "controlplane", "tenants"}, path
                if top in {"nodes", "models_registry", "gateway", "metering", "dashboard"}:
                    assert any(name.startswith(ours) for ours in allowed_ours), (path, name)


def test_an_assignment_reads_back_and_ignores_keys_it_does_not_know() -> None:
    sent = protocol.Assignment(
        id=3,
        deployment="chat",
        desired_state=protocol.RUNNING,
        state=protocol.PENDING,
        served_model_name="tiny",
        command=["/opt/python", "-m", engine_command.SERVER_MODULE],
        fingerprint="abc",
        api_key="cpw-x",
        generation=2,
    )
    received = protocol.Assignment.from_json(sent.to_json() | {"added_later": True})
    assert received == sent
    argv = protocol.engine_command(received, "127.0.0.1", 8100)
    assert argv[-4:] == ["--host", "127.0.0.1", "--port", "8100"]


def test_redaction_replaces_the_key_everywhere_and_leaves_text_without_one_alone() -> None:
    assert (
        protocol.redact("a cpw-k b cpw-k", "cpw-k")
        == f"a {protocol.REDACTED} b {protocol.REDACTED}"
    )
    assert protocol.redact("nothing here", None) == "nothing here"
    assert protocol.redact("nothing here", "") == "nothing here"


# --- the command line ----------------------------------------------------------------------


@pytest.mark.django_db
def test_the_command_line_is_built_whole_on_the_control_plane_side() -> None:
    version = factories.version(
        weights_source="/models/tiny",
        dtype="float32",
        max_model_len=1024,
        enable_prefix_caching=False,
        extra_args={"--max-num-seqs": 4, "enforce_eager": True, "kv-cache-dtype": "auto"},
        runtime=factories.runtime(python_path="/opt/vllm/bin/python"),
    )
    argv = engine_command.build(version, gpus_per_replica=2)
    assert argv[:7] == [
        "/opt/vllm/bin/python",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "/models/tiny",
        "--served-model-name",
        version.model.name,
    ]
    rest = argv[7:]
    assert rest[:5] == [
        "--dtype",
        "float32",
        "--max-model-len",
        "1024",
        "--no-enable-prefix-caching",
    ]
    assert rest[5:7] == ["--tensor-parallel-size", "2"]
    # extra_args come last, in every spelling a version may use, as vLLM flags.
    assert sorted(rest[7:]) == sorted(
        ["--max-num-seqs", "4", "--enforce-eager", "--kv-cache-dtype", "auto"]
    )
    assert "--host" not in argv and "--port" not in argv and "--api-key" not in argv


@pytest.mark.django_db
def test_the_assignment_carries_the_built_command_and_a_fingerprint_of_what_makes_the_engine() -> (
    None
):
    worker = factories.worker(deployment=factories.deployment())
    first = assignment(worker)
    assert first.command == engine_command.build(worker.deployment.model_version)
    assert assignment(worker).fingerprint == first.fingerprint  # stable while nothing changes

    worker.generation += 1  # a restart asked for
    worker.save()
    restarted = assignment(worker)
    assert restarted.fingerprint != first.fingerprint
    assert restarted.command == first.command

    version = worker.deployment.model_version
    version.extra_args = {"max-num-seqs": 8}
    version.save()
    worker.refresh_from_db()
    assert assignment(worker).fingerprint != restarted.fingerprint


# --- the scheduling policy: one rule, every spelling -----------------------------------------


@pytest.mark.parametrize(
    ("extra_args", "policy"),
    [
        ({}, "fcfs"),
        ({"scheduling-policy": "priority"}, "priority"),
        ({"scheduling_policy": "priority"}, "priority"),
        ({"--scheduling-policy": "priority"}, "priority"),
        ({"--scheduling_policy": "priority"}, "priority"),
        ({"--scheduling-policy": "fcfs"}, "fcfs"),
    ],
)
def test_the_scheduling_policy_is_read_in_every_spelling_validation_accepts(
    extra_args: dict[str, str], policy: str
) -> None:
    assert engine_args.validate(extra_args) == {}
    assert engine_args.scheduling_policy(extra_args) == policy


def test_two_spellings_of_one_argument_are_refused() -> None:
    problems = engine_args.validate(
        {"scheduling-policy": "fcfs", "--scheduling-policy": "priority"}
    )
    assert problems == {
        "--scheduling-policy": "'scheduling-policy' is already set (as 'scheduling-policy')."
    }


@pytest.mark.django_db(transaction=True)  # load_routes closes a connection inside a transaction
def test_the_gateway_sends_priorities_to_a_version_that_sets_the_policy_with_dashes() -> None:
    version = factories.version(extra_args={"--scheduling-policy": "priority"}, state="active")
    fcfs = factories.version(extra_args={"--scheduling-policy": "fcfs"}, state="active")
    for each in (version, fcfs):
        factories.worker(
            deployment=factories.deployment(model_version=each), port=8100, state="ready"
        )
    routes = load_routes().routes
    (priority_route,) = routes[version.model.name]
    (fcfs_route,) = routes[fcfs.model.name]
    assert priority_route.upstreams[0].priority_scheduling is True
    assert fcfs_route.upstreams[0].priority_scheduling is False
