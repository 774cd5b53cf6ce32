"""`python -m nodes.agent`: the node agent runs with the standard library and this package
only, without the control plane's Django settings or SECRET_KEY."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pytest_django.live_server_helper import LiveServer

from nodes import credentials
from nodes.models import Node

ROOT = Path(__file__).resolve().parent.parent


def bare_environment(**extra: str) -> dict[str, str]:
    """What a GPU host has: no Django settings module, no SECRET_KEY, no database."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return env | extra


def imported_modules(importtime_log: str) -> set[str]:
    """Top-level packages named in `python -X importtime`'s report."""
    names = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_the_agent_shows_its_options_without_django() -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "nodes.agent", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=bare_environment(),
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    for option in ("--control-plane", "--credential", "--port-range", "--stop-workers-on-exit"):
        assert option in out.stdout
    assert "django" not in imported_modules(out.stderr)


def test_without_a_control_plane_it_says_what_is_missing() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "nodes.agent", "--credential", "cpn-x"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=bare_environment(),
        timeout=60,
    )
    assert out.returncode == 2
    assert "--control-plane (or CONTROLPLANE_URL) is required" in out.stderr


@pytest.mark.django_db(transaction=True)
def test_the_agent_registers_heartbeats_and_exits_cleanly_without_django(
    live_server: LiveServer, tmp_path: Path
) -> None:
    node = Node.objects.create(name="bare-host", address="127.0.0.1")
    credential = credentials.issue(node)
    log = tmp_path / "agent.log"
    command = [sys.executable, "-X", "importtime", "-m", "nodes.agent", "--cpu"]
    command += ["--control-plane", live_server.url, "--name", "bare-host"]
    command += ["--state-dir", str(tmp_path / "state"), "--interval", "0.3"]
    with open(log, "w") as out:
        agent = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=bare_environment(NODE_CREDENTIAL=credential),
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        beats = 0
        while time.monotonic() < deadline and beats < 2:
            node.refresh_from_db()
            if node.last_heartbeat_at is not None and node.gpus.filter(kind="cpu").exists():
                beats += 1
            time.sleep(0.5)
        assert beats >= 2, log.read_text()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0, log.read_text()
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()
    text = log.read_text()
    assert "registered node bare-host" in text
    assert "django" not in imported_modules(text)
    assert credential not in text
