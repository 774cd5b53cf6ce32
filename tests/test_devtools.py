"""The development tools' shared helpers (devtools/): real processes and sockets, no engine.

The one rule that ties devtools to production: the CPU flags the tests and benches start vLLM
with are the ones the node agent is given for the built-in models (register_runtime --cpu and
register_builtin_models), so a test engine behaves like a deployed one.
"""

from __future__ import annotations

import http.server
import math
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.commands import agent_command, celery_command, granian_command
from devtools.engine import (
    CPU_ENGINE_ARGS,
    CPU_ENGINE_ENV,
    ENGINE_MODULE,
    engine_command,
    engine_processes,
    kill_engines,
)
from devtools.net import free_port, port_open, wait_http
from devtools.processes import group_members, spawn, stop
from devtools.stats import percentile

ROOT = Path(__file__).resolve().parent.parent


def options(argv: list[str] | tuple[str, ...]) -> dict[str, object]:
    """["--a", "1", "--b"] -> {"a": "1", "b": True}."""
    parsed: dict[str, object] = {}
    for item in argv:
        if item.startswith("--"):
            name = item[2:]
            parsed[name] = True
        else:
            parsed[name] = item
    return parsed


def test_the_test_engines_cpu_flags_are_those_the_node_agent_is_given() -> None:
    from models_registry.management.commands import register_builtin_models, register_runtime

    assert CPU_ENGINE_ENV == register_runtime.CPU_ENVIRONMENT
    registered = {
        name: value if value is True else str(value)
        for name, value in register_builtin_models.CPU_ARGS.items()
    }
    assert options(CPU_ENGINE_ARGS) == registered | {"dtype": register_builtin_models.DTYPE}


def test_an_engine_command_starts_the_api_server_module_with_the_cpu_flags() -> None:
    command = engine_command("/models/tiny", "tiny", 8123, "key-1", python="/engine/python")
    assert command[:3] == ["/engine/python", "-m", ENGINE_MODULE]
    assert command[command.index("--served-model-name") + 1] == "tiny"
    assert command[command.index("--port") + 1] == "8123"
    assert command[-2:] == ["--api-key", "key-1"]
    assert " ".join(CPU_ENGINE_ARGS) in " ".join(command)


def test_a_percentile_is_a_value_some_request_really_had() -> None:
    values = [0.3, 0.1, 0.2, 0.4]
    assert percentile(values, 0.5) == 0.3
    assert percentile(values, 0.99) == 0.4
    assert percentile(values, 0.0) == 0.1
    assert math.isnan(percentile([], 0.5))


def spawn_group(ignore_term: bool) -> subprocess.Popen[bytes]:
    """A process with a child of its own, in a new session, optionally deaf to SIGTERM."""
    code = (
        "import signal, subprocess, sys, time\n"
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
        + "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        + "print('ready', flush=True)\n"
        + "time.sleep(60)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"
    return process


@pytest.mark.parametrize("ignore_term", [False, True], ids=["obeys", "ignores-sigterm"])
def test_stopping_a_process_ends_its_whole_group(ignore_term: bool) -> None:
    process = spawn_group(ignore_term)
    assert len(group_members(process.pid)) == 2
    stop(process, timeout=1)
    assert process.poll() is not None
    assert group_members(process.pid) == []
    stop(process)  # a second stop of an ended process is harmless


def test_waiting_for_http_gives_up_at_once_when_the_process_exits(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("address already in use\n")
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait(10)
    with pytest.raises(RuntimeError, match=r"exited \(3\) address already in use"):
        wait_http("http://127.0.0.1:9/health", 60, process=process, log=log)


@pytest.fixture
def refusing_server() -> Iterator[int]:
    """An HTTP server that answers every GET with 401, as the agent API does without a key."""

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", free_port(18900, 18949)), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_server_that_refuses_us_is_up_only_when_any_status_will_do(
    refusing_server: int,
) -> None:
    url = f"http://127.0.0.1:{refusing_server}/api/agent/v1/workers"
    assert port_open(refusing_server)
    wait_http(url, 10, any_status=True)
    with pytest.raises(TimeoutError, match="did not answer within"):
        wait_http(url, 1)


def test_engines_are_found_and_killed_by_the_port_they_serve_on() -> None:
    # A stand-in with an engine's command line: the search reads /proc, not the process.
    fake = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", ENGINE_MODULE, "--port", "18999"],
        start_new_session=True,
    )
    try:
        found = engine_processes(["18990-18999"])
        assert [(pid, pgid) for pid, pgid, _ in found] == [(fake.pid, fake.pid)]
        assert engine_processes(["18980-18989"]) == []
        kill_engines(["18990-18999"])
        assert fake.wait(10) == -signal.SIGKILL
    finally:
        stop(fake, 5)


def test_devtools_import_neither_django_nor_httpx() -> None:
    """`make up` runs on the base install (no httpx) and imports devtools before Django."""
    probe = (
        "import sys, devtools.engine, devtools.net, devtools.processes, devtools.progress, "
        "devtools.stats; print(sorted(m for m in ('django', 'httpx') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_a_spawned_process_appends_to_its_log_in_a_session_of_its_own(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    log.write_text("earlier run\n")
    child = spawn([sys.executable, "-c", "import os; print(os.getsid(0) == os.getpid())"], log)
    assert child.wait(10) == 0
    assert log.read_text() == "earlier run\nTrue\n"


def test_the_control_planes_processes_run_from_this_python() -> None:
    server = granian_command(8031, extra=["--workers", "1"])
    assert server[:3] == [sys.executable, "-m", "granian"]
    assert server[-1] == "controlplane.asgi:application"
    assert server[server.index("--port") + 1] == "8031"
    agent = agent_command("http://127.0.0.1:8031", "local", "8100-8199", ["--interval", "1"])
    assert agent[1:3] == [str(ROOT / "manage.py"), "nodeagent"]
    assert agent[agent.index("--port-range") + 1] == "8100-8199"
    assert agent[-2:] == ["--interval", "1"]
    celery = celery_command(Path("/tmp/schedule"), "INFO")
    assert "--beat" in celery
    assert celery[celery.index("--schedule") + 1] == "/tmp/schedule"
