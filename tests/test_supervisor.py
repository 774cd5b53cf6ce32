"""The supervisor's process handling with real processes (no vLLM needed): process groups,
SIGTERM-then-SIGKILL, engine environment and command line, logs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nodes.agent import discovery, protocol
from nodes.agent.client import ControlPlaneClient
from nodes.agent.protocol import Assignment
from nodes.agent.supervisor import (
    Failures,
    Running,
    Supervisor,
    SupervisorSettings,
    group_members,
    worker_environment,
)

# A stand-in engine: forks a child (like vLLM's engine core) and ignores SIGTERM.
STUBBORN = """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.fork() == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(600)
time.sleep(600)
"""


def supervisor(tmp_path: Path, **settings: object) -> Supervisor:
    return Supervisor(
        settings=SupervisorSettings(state_dir=tmp_path, **settings),  # type: ignore[arg-type]
        # Nothing listens there: these tests never report.
        client=ControlPlaneClient("http://127.0.0.1:9", "cpn-unused"),
    )


def spawn(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def test_stopping_kills_the_whole_group_even_when_it_ignores_sigterm(tmp_path: Path) -> None:
    process = spawn(STUBBORN)
    time.sleep(0.5)
    assert len(group_members(process.pid)) == 2  # the leader and its child
    sup = supervisor(tmp_path, stop_grace=1.0)
    sup.children[process.pid] = process
    sup.running[1] = Running(1, process.pid, process.pid, 8100, "f", "m", "", time.monotonic())
    started = time.monotonic()
    sup.stop(1)
    assert group_members(process.pid) == []
    assert 1.0 <= time.monotonic() - started < 8
    assert process.returncode is not None  # reaped, no zombie left behind
    assert sup.running == {}


def test_a_polite_engine_stops_at_sigterm_without_waiting_for_the_grace(tmp_path: Path) -> None:
    process = spawn("import time; time.sleep(600)")
    sup = supervisor(tmp_path, stop_grace=30.0)
    sup.children[process.pid] = process
    sup.running[1] = Running(1, process.pid, process.pid, 8100, "f", "m", "", time.monotonic())
    started = time.monotonic()
    sup.stop(1)
    assert time.monotonic() - started < 5
    assert process.returncode == -15


def test_the_state_file_lets_a_new_supervisor_adopt_a_live_engine_and_skip_a_dead_one(
    tmp_path: Path,
) -> None:
    port = "8177"
    # The adoption check reads the command line, so the stand-in carries our port in its argv.
    live = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", "--port", port],
        start_new_session=True,
    )
    dead = spawn("pass")
    dead.wait()
    first = supervisor(tmp_path)
    first.running[1] = Running(1, live.pid, live.pid, int(port), "f", "m", "", 0.0, "ready")
    first.running[2] = Running(2, dead.pid, dead.pid, 8178, "f", "m", "", 0.0, "ready")
    first.save_state()

    second = supervisor(tmp_path)
    try:
        assert second.adopt() == [1]
        assert second.running[1].pid == live.pid
        assert 2 not in second.running
    finally:
        live.kill()
        live.wait()


def test_an_engine_gets_its_key_and_gpus_in_its_environment_and_none_of_the_agents_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NODE_CREDENTIAL", "cpn-secret")
    monkeypatch.setenv("SECRET_KEY", "django-secret")
    monkeypatch.setenv("DATABASE_URL", "postgres://secret@db/x")
    monkeypatch.setenv("HF_HOME", "/models/hf")
    env = worker_environment({"VLLM_CPU_KVCACHE_SPACE": "1"}, ["GPU-a", "GPU-b"], "cpw-key")
    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-a,GPU-b"
    assert env["VLLM_API_KEY"] == "cpw-key"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert env["HF_HOME"] == "/models/hf"
    assert not {"NODE_CREDENTIAL", "SECRET_KEY", "DATABASE_URL"} & set(env)
    assert worker_environment({}, [], "k")["CUDA_VISIBLE_DEVICES"] == ""


def test_the_engine_command_carries_no_key() -> None:
    spec = protocol.Assignment(
        id=1,
        deployment="tiny",
        desired_state=protocol.RUNNING,
        state=protocol.PENDING,
        served_model_name="tiny",
        command=["/opt/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--x"],
        fingerprint="f",
        api_key="cpw-secret",
    )
    command = protocol.engine_command(spec, "127.0.0.1", 8100)
    assert command[:4] == spec.command
    assert command[4:] == ["--host", "127.0.0.1", "--port", "8100"]
    assert "cpw-secret" not in " ".join(command)
    assert "--api-key" not in command


def test_logs_rotate_by_copy_and_truncate_keeping_the_writers_descriptor(tmp_path: Path) -> None:
    sup = supervisor(tmp_path, log_max_bytes=100, log_backups=2)
    log = tmp_path / "worker-1.log"
    with open(log, "ab") as writer:
        for round_number in range(3):
            writer.write(f"round {round_number} ".encode() * 20)
            writer.flush()
            sup._rotate_log(log)
        writer.write(b"after")
        writer.flush()
    assert log.read_bytes() == b"after"
    assert (tmp_path / "worker-1.log.1").read_bytes().startswith(b"round 2")
    assert (tmp_path / "worker-1.log.2").read_bytes().startswith(b"round 1")
    assert not (tmp_path / "worker-1.log.3").exists()


def test_the_log_tail_hides_the_engine_key(tmp_path: Path) -> None:
    sup = supervisor(tmp_path, log_tail_lines=2)
    sup._keys[7] = "cpw-secret"
    log = tmp_path / "worker-7.log"
    log.write_text("one\nkey=cpw-secret\nthree\n")
    assert sup.log_tail(log, 7) == "key=[engine key redacted]\nthree"


def test_ports_in_use_are_skipped(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 8195))
        taken.listen()
        sup = supervisor(tmp_path, port_range=(8195, 8196))
        assert sup.allocate_port() == 8196


def test_a_host_without_gpus_is_one_cpu_pseudo_device_with_the_hosts_memory() -> None:
    facts = discovery.discover("node-x", force_cpu=True)
    (device,) = facts["devices"]
    assert device["kind"] == "cpu" and device["uuid"] == "cpu-node-x"
    assert device["memory_total_bytes"] == facts["memory_bytes"] > 0
    assert facts["cpu_count"] == len(os.sched_getaffinity(0))


def test_discovery_runs_standalone_and_prints_json() -> None:
    import json

    out = subprocess.run(
        [sys.executable, "-m", "nodes.agent.discovery", "--name", "n1"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
        env={"PATH": os.environ.get("PATH", "")},
    )
    facts = json.loads(out.stdout)
    assert facts["devices"] and {"cpu_count", "memory_bytes", "nvml"} <= set(facts)


def sleeper(worker_id: int, generation: int, state: str = protocol.CRASH_LOOPING) -> Assignment:
    return protocol.Assignment(
        id=worker_id,
        deployment="d",
        desired_state=protocol.RUNNING,
        state=state,
        served_model_name="m",
        command=[sys.executable, "-c", "import time; time.sleep(600)"],
        fingerprint=f"f{generation}",
        api_key="cpw-k",
        generation=generation,
    )


def test_a_restart_asked_for_skips_the_backoff_of_a_crash_looping_worker(tmp_path: Path) -> None:
    sup = supervisor(tmp_path, port_range=(8106, 8108))
    sup.failures[1] = Failures(consecutive=4, next_start_at=sup.clock() + 1000, generation=0)
    try:
        sup.reconcile([sleeper(1, generation=0)])
        assert 1 not in sup.running  # still waiting out its backoff
        sup.reconcile([sleeper(1, generation=1)])
        assert 1 in sup.running  # a restart was asked for: started at once
        assert sup.failures[1] == Failures(consecutive=0, next_start_at=0.0, generation=1)
    finally:
        sup.stop_all(report=False)


def test_the_state_file_keeps_failure_counts_with_their_generation(tmp_path: Path) -> None:
    first = supervisor(tmp_path)
    first.failures[1] = Failures(consecutive=3, next_start_at=99.0, generation=2)
    first.save_state()
    second = supervisor(tmp_path)
    second.adopt()
    assert second.failures[1] == Failures(consecutive=3, next_start_at=0.0, generation=2)
    # What an agent before generations wrote: a bare count.
    (tmp_path / "workers.json").write_text('{"running": {}, "failures": {"5": 4}}')
    third = supervisor(tmp_path)
    third.adopt()
    assert third.failures[5] == Failures(consecutive=4, generation=0)
