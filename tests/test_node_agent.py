"""The node agent against real vLLM workers, a real control-plane server and real processes.

One control plane (a live server thread on the test database) and two agents (real
`manage.py nodeagent` subprocesses acting as two nodes on this machine) are shared by the
module; the tests run in file order and reuse the engine the previous one left, so the whole
file starts three engines. Every engine is killed by process group in the teardown, even on
failure.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings
from pytest_django.live_server_helper import LiveServer

from controlplane.audit import Origin, Via
from models_registry.management.commands.register_runtime import CPU_ENVIRONMENT
from models_registry.models import EngineRuntime, Model, ModelGrant, ModelVersion, VersionState
from nodes import credentials, services
from nodes.agent.supervisor import group_members
from nodes.models import Deployment, DesiredState, Node, NodeState, Worker, WorkerEvent
from nodes.secrets import worker_api_key
from nodes.tasks import mark_lost_nodes
from tenants.models import ApiKey, PriorityClass, Tenant

from . import agent_support
from .agent_support import AgentProcess
from .gateway_support import EmbeddedGateway

ROOT = Path(settings.BASE_DIR)
ENGINE_PYTHON = ROOT / ".venv-engine" / "bin" / "python"
TINY_MODEL = ROOT / "var" / "models" / "tiny-llama"
SERVER_PORTS = range(8091, 8100)
GATEWAY_PORT = 8105
PORT_RANGES = {"node-a": "8110-8119", "node-b": "8120-8129"}
HEARTBEAT_TIMEOUT = 4
ENGINE_START_TIMEOUT = 300  # seconds; engines share two cores with other test runs

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not ENGINE_PYTHON.exists(), reason="no engine environment: make engine"),
    pytest.mark.skipif(not (TINY_MODEL / "config.json").exists(), reason="no tiny model built"),
]


@dataclass
class Stack:
    url: str
    version: ModelVersion
    broken_version: ModelVersion
    agents: dict[str, AgentProcess]


def engine_processes() -> list[tuple[int, int, str]]:
    """(pid, pgid, cmdline) of every live vLLM process serving on this module's ports."""
    return agent_support.engine_processes(PORT_RANGES.values())


def processes_in_group(pgid: int) -> list[int]:
    return group_members(pgid)


def kill_engines() -> None:
    agent_support.kill_engines(PORT_RANGES.values())


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def assert_history_is_legal() -> int:
    """Every worker's events chain up and follow the state machine; returns how many."""
    from nodes.states import can_transition

    events = list(WorkerEvent.objects.order_by("worker_id", "id"))
    by_worker: dict[int, list[WorkerEvent]] = {}
    for event in events:
        by_worker.setdefault(event.worker_id, []).append(event)
    for history in by_worker.values():
        assert history[0].from_state == "pending"
        for earlier, later in itertools.pairwise(history):
            assert earlier.to_state == later.from_state
        assert all(can_transition(e.from_state, e.to_state) for e in history)
    return len(events)


def ready_worker(deployment: Deployment, timeout: float = ENGINE_START_TIMEOUT) -> Worker:
    def check() -> Worker | None:
        return (
            Worker.objects.filter(deployment=deployment, state="ready")
            .select_related("node")
            .first()
        )

    worker: Worker = wait_for(f"a ready worker of {deployment.name}", check, timeout)
    return worker


@pytest.fixture(scope="module")
def control_plane(django_db_setup: None, django_db_blocker: Any) -> Iterator[LiveServer]:
    """The control plane as a real HTTP server on the test database, for this module.

    Not pytest-django's `live_server`: that one makes every test transactional, flushing the
    database (and the agents' nodes) after each test; this module shares its state.
    """
    with django_db_blocker.unblock():
        server = None
        for port in SERVER_PORTS:  # the first free one of ours
            try:
                server = LiveServer(f"127.0.0.1:{port}")
                break
            except OSError:
                continue
        assert server is not None, f"no free port in {SERVER_PORTS}"
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def stack(
    control_plane: LiveServer, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("agents")

    # pytest runs no finalizers when it is terminated; turn SIGTERM (a CI timeout, a Ctrl-C
    # by a supervisor) into KeyboardInterrupt, which it does unwind, so no engine is left.
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    with (
        django_db_blocker.unblock(),
        override_settings(
            NODE_HEARTBEAT_TIMEOUT_SECONDS=HEARTBEAT_TIMEOUT, NODE_AGENT_INTERVAL_SECONDS=1
        ),
    ):
        server = control_plane
        agents: dict[str, AgentProcess] = {}
        try:
            runtime = EngineRuntime.objects.create(
                name="vllm-cpu-test",
                version="0.32.0",
                python_path=str(ENGINE_PYTHON),
                environment=dict(CPU_ENVIRONMENT),
            )
            # A runtime whose python has no vLLM: every start fails at once (crash loop).
            broken = EngineRuntime.objects.create(
                name="no-vllm", version="none", python_path=sys.executable
            )
            model = Model.objects.create(name="tiny-llama")
            common = {
                "weights_source": str(TINY_MODEL),
                "dtype": "float32",
                "extra_args": {"gpu-memory-utilization": 0.3, "enforce-eager": True},
                "state": VersionState.ACTIVE,
            }
            version = ModelVersion.objects.create(
                model=model, label="v1", runtime=runtime, **common
            )
            broken_version = ModelVersion.objects.create(
                model=model, label="broken", runtime=broken, **common
            )
            for name in PORT_RANGES:
                node = Node.objects.create(name=name, address="127.0.0.1")
                agents[name] = AgentProcess(
                    name=name,
                    credential=credentials.issue(node),
                    state_dir=base / name,
                    url=server.url,
                    port_range=PORT_RANGES[name],
                    start_timeout=ENGINE_START_TIMEOUT,
                )
                agents[name].start()
            wait_for(
                "both agents to register",
                lambda: Node.objects.filter(gpus__kind="cpu").distinct().count() == 2,
            )
            yield Stack(
                url=server.url, version=version, broken_version=broken_version, agents=agents
            )
        finally:
            for agent in agents.values():
                agent.stop(signal.SIGKILL)
            kill_engines()
            call_command("flush", interactive=False, verbosity=0)
            close_other_sessions()
            signal.signal(signal.SIGTERM, previous)


def close_other_sessions() -> None:
    """Connections the gateway's threads left open would block dropping the test database."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def the_deployment(stack: Stack) -> Deployment:
    deployment = Deployment.objects.filter(name="tiny").first()
    if deployment is None:
        deployment = Deployment.objects.create(model_version=stack.version, name="tiny")
    return deployment


def agent_of(stack: Stack, worker: Worker) -> AgentProcess:
    assert worker.node is not None
    return stack.agents[worker.node.name]


def test_both_agents_registered_their_hosts_as_cpu_nodes(stack: Stack, db: None) -> None:
    """(Its `db` also makes pytest-django create the test database when this file runs
    alone; pytest-django runs it first.)"""
    for name in PORT_RANGES:
        node = Node.objects.get(name=name)
        assert node.state == NodeState.READY
        assert node.labels == {"accelerator": "cpu"}
        assert node.cpu_count >= 1 and node.memory_bytes > 0
        (device,) = node.gpus.all()
        assert (device.kind, device.uuid) == ("cpu", f"cpu-{name}")
        assert device.memory_total_bytes == node.memory_bytes


def test_a_deployment_becomes_a_ready_worker_that_answers_only_with_its_key(
    stack: Stack,
) -> None:
    worker = ready_worker(the_deployment(stack))
    assert worker.port is not None and worker.pid is not None
    base_url = f"http://127.0.0.1:{worker.port}/v1"
    key = worker_api_key(worker.pk)

    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=60)
    completion = client.completions.create(model="tiny-llama", prompt="hello", max_tokens=4)
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    chat = client.chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert chat.choices[0].message.content is not None

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).completions.create(
            model="tiny-llama", prompt="hello", max_tokens=4
        )
    no_key = httpx.post(
        f"{base_url}/completions", json={"model": "tiny-llama", "prompt": "hi", "max_tokens": 2}
    )
    assert no_key.status_code == 401

    # The key is on no command line and in no log.
    assert all(key not in cmd for _pid, _pgid, cmd in engine_processes())
    agent = agent_of(stack, worker)
    engine_log = agent.state_dir / "logs" / f"worker-{worker.pk}.log"
    assert "Application startup complete" in engine_log.read_text(errors="replace")
    assert key not in engine_log.read_text(errors="replace")
    assert key not in agent.log()


def test_kill_9_of_the_engine_restarts_it_after_a_backoff(stack: Stack) -> None:
    worker = ready_worker(the_deployment(stack))
    old_pid, restarts = worker.pid, worker.restarts
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)

    failed = wait_for(
        "the agent to report the killed engine",
        lambda: WorkerEvent.objects.filter(worker=worker, to_state="failed", exit_code=-9).first(),
        timeout=30,
    )
    assert "engine exited with code -9" in failed.reason
    restarted = wait_for(
        "the restart",
        lambda: (
            WorkerEvent.objects.filter(worker=worker, to_state="starting", id__gt=failed.id)
            .order_by("id")
            .first()
        ),
        timeout=30,
    )
    # Backoff: the first restart waits backoff_base (1 s) after the failure.
    assert (restarted.created_at - failed.created_at).total_seconds() >= 1.0
    worker.refresh_from_db()
    assert worker.restarts == restarts + 1
    assert worker.pid != old_pid
    assert worker.last_exit_code == -9
    assert processes_in_group(old_pid) == []  # no engine-core child of the killed one lingers
    # The failure report carried the killed engine's last log lines.
    assert "GET /health" in worker.log_tail or "INFO" in worker.log_tail
    ready_worker(the_deployment(stack))


def test_restarting_the_agent_readopts_its_running_worker_instead_of_starting_another(
    stack: Stack,
) -> None:
    worker = ready_worker(the_deployment(stack))
    agent = agent_of(stack, worker)
    pid_before = worker.pid
    events_before = WorkerEvent.objects.filter(worker=worker).count()
    engines_before = engine_processes()

    agent.stop(signal.SIGTERM)
    assert processes_in_group(worker.pid or 0), "stopping the agent must leave engines running"
    agent.start()
    wait_for("the agent to re-adopt", lambda: "adopted worker" in agent.log(), timeout=30)
    node = worker.node
    assert node is not None
    # Let it run a few reconcile rounds after its first heartbeat.
    node.refresh_from_db()
    beat = node.last_heartbeat_at
    wait_for(
        "heartbeats from the restarted agent",
        lambda: Node.objects.get(pk=node.pk).last_heartbeat_at != beat,
        timeout=30,
    )
    time.sleep(3)
    worker.refresh_from_db()
    assert worker.state == "ready"
    assert worker.pid == pid_before
    assert sorted(p for p, _g, _c in engine_processes()) == sorted(
        p for p, _g, _c in engines_before
    )
    assert WorkerEvent.objects.filter(worker=worker).count() == events_before
    assert Worker.objects.filter(deployment=worker.deployment).exclude(state="stopped").count() == 1


def test_a_restart_asked_for_replaces_a_ready_engine_through_the_state_machine(
    stack: Stack,
) -> None:
    worker = ready_worker(the_deployment(stack))
    old_pid, restarts = worker.pid, worker.restarts
    assert old_pid is not None
    last_event = WorkerEvent.objects.filter(worker=worker).order_by("id").last()
    assert last_event is not None

    services.restart_worker(worker, origin=Origin(actor=None, via=Via.DASHBOARD))

    failed = wait_for(
        "the agent to stop the stale engine",
        lambda: WorkerEvent.objects.filter(
            worker=worker, to_state="failed", id__gt=last_event.id
        ).first(),
        timeout=60,
    )
    assert failed.from_state == "ready"
    assert failed.reason == "a restart was asked for; restarting"
    assert processes_in_group(old_pid) == []
    fresh = wait_for(
        "the restarted engine to be ready",
        lambda: (
            Worker.objects.filter(pk=worker.pk, state="ready", ready_at__gt=failed.created_at)
            .exclude(pid=old_pid)
            .first()
        ),
        timeout=ENGINE_START_TIMEOUT,
    )
    assert fresh.pid != old_pid and fresh.restarts == restarts + 1
    moves = WorkerEvent.objects.filter(worker=worker, id__gt=last_event.id).order_by("id")
    assert [(e.from_state, e.to_state) for e in moves] == [
        ("ready", "failed"),
        ("failed", "starting"),
        ("starting", "ready"),
    ]
    assert assert_history_is_legal() > 0


def test_a_stopped_node_hands_its_workers_to_the_other_node(stack: Stack) -> None:
    deployment = the_deployment(stack)
    worker = ready_worker(deployment)
    lost_agent = agent_of(stack, worker)
    assert worker.node is not None
    lost_name = worker.node.name
    other_name = next(name for name in stack.agents if name != lost_name)

    # The host dies: its agent and its engines with it.
    lost_agent.stop(signal.SIGKILL)
    os.killpg(worker.pid or 0, signal.SIGKILL)
    time.sleep(HEARTBEAT_TIMEOUT + 1)
    assert lost_name in mark_lost_nodes()  # what the periodic task does

    worker.refresh_from_db()
    assert worker.state == "stopped"
    assert f"node {lost_name} was lost" in worker.state_reason
    moved = ready_worker(deployment)
    assert moved.pk != worker.pk
    assert moved.node is not None and moved.node.name == other_name

    # The host comes back: its agent stops nothing that runs elsewhere and starts nothing.
    lost_agent.start()
    wait_for(
        f"{lost_name} to be ready again",
        lambda: Node.objects.get(name=lost_name).state == NodeState.READY,
        timeout=30,
    )
    time.sleep(2)
    assert len(engine_processes()) == 1
    assert Worker.objects.filter(deployment=deployment).exclude(state="stopped").count() == 1


def test_scaling_to_zero_and_deleting_leaves_no_engine_process(stack: Stack) -> None:
    deployment = the_deployment(stack)
    worker = ready_worker(deployment)
    pgid = worker.pid or 0
    assert processes_in_group(pgid)

    deployment.replicas = 0
    deployment.save()
    wait_for(
        "the worker to stop",
        lambda: Worker.objects.get(pk=worker.pk).state == "stopped",
        timeout=60,
    )
    transitions = list(WorkerEvent.objects.filter(worker=worker).values_list("to_state", flat=True))
    assert transitions[-2:] == ["draining", "stopped"]
    assert processes_in_group(pgid) == []
    assert Worker.objects.get(pk=worker.pk).desired_state == DesiredState.STOPPED

    assert assert_history_is_legal() > 0
    deployment.delete()
    time.sleep(2)
    assert engine_processes() == []
    assert not Worker.objects.filter(pk=worker.pk).exists()


def test_repeated_crashes_end_in_crash_looping_with_the_engines_last_words(
    stack: Stack,
) -> None:
    deployment = Deployment.objects.create(model_version=stack.broken_version, name="broken")
    worker = wait_for(
        "the broken worker to crash-loop",
        lambda: Worker.objects.filter(deployment=deployment, state="crash_looping").first(),
        timeout=60,
    )
    assert worker.restarts >= 2
    assert worker.last_exit_code == 1
    assert "3 failures in a row" in worker.state_reason
    assert "No module named 'vllm'" in worker.log_tail
    failed = WorkerEvent.objects.filter(worker=worker, to_state="failed").order_by("id")
    gaps = [
        (later.created_at - earlier.created_at).total_seconds()
        for earlier, later in itertools.pairwise(failed)
    ]
    # Exponential backoff between attempts: 1 s, then 2 s (the agent runs with base 1 s).
    assert len(gaps) >= 2
    assert gaps[0] >= 1.0 and gaps[1] >= 2.0

    deployment.replicas = 0
    deployment.save()
    wait_for(
        "the crash-looping worker to stop",
        lambda: Worker.objects.get(pk=worker.pk).state == "stopped",
        timeout=30,
    )
    assert engine_processes() == []
    assert assert_history_is_legal() >= 8


def test_a_priority_scheduled_version_gets_the_tenants_priority_through_the_gateway(
    stack: Stack,
) -> None:
    """The version spells the policy with dashes, as validation allows; the engine logs each
    request body (DEBUG, --enable-log-requests), so the priority it received can be read."""
    runtime = EngineRuntime.objects.create(
        name="vllm-cpu-debug",
        version="0.32.0",
        python_path=str(ENGINE_PYTHON),
        environment=dict(CPU_ENVIRONMENT) | {"VLLM_LOGGING_LEVEL": "DEBUG"},
    )
    model = Model.objects.create(name="tiny-prio")
    version = ModelVersion.objects.create(
        model=model,
        label="v1",
        runtime=runtime,
        weights_source=str(TINY_MODEL),
        dtype="float32",
        state=VersionState.ACTIVE,
        extra_args={
            "gpu-memory-utilization": 0.3,
            "enforce-eager": True,
            "--scheduling-policy": "priority",
            "enable-log-requests": True,
        },
    )
    tenant = Tenant.objects.create(slug="low", name="Low", priority_class=PriorityClass.LOW)
    ModelGrant.objects.create(tenant=tenant, model=model)
    _, key = ApiKey.issue(tenant=tenant, name="batch")
    deployment = Deployment.objects.create(model_version=version, name="prio")
    worker = ready_worker(deployment)
    engine_log = agent_of(stack, worker).state_dir / "logs" / f"worker-{worker.pk}.log"
    assert "--scheduling-policy priority" in engine_log.read_text(errors="replace")

    gateway = EmbeddedGateway(GATEWAY_PORT)
    try:
        client = openai.OpenAI(
            base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=120
        )
        chat = client.chat.completions.create(
            model="tiny-prio", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert chat.choices[0].message.content is not None
    finally:
        gateway.stop()
    # A low-priority tenant's requests carry vLLM priority 20 (tenants.models.ENGINE_PRIORITY).
    body = wait_for(
        "the engine to log the request body",
        lambda: [
            line
            for line in engine_log.read_text(errors="replace").splitlines()
            if "JSON body" in line and "tiny-prio" in line
        ],
        timeout=30,
    )
    assert '"priority":20' in body[-1]

    deployment.delete()
    wait_for("the priority engine to stop", lambda: engine_processes() == [], timeout=60)
