"""The node agent's command line: ``python -m nodes.agent`` (standard library only).

A GPU host runs the agent with this package and the standard library: no Django settings,
no ``SECRET_KEY``, no database. ``manage.py nodeagent`` is the same command for a host that
has the whole project (development, tests); it only supplies the project's state directory.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from nodes.agent import discovery
from nodes.agent.agent import Agent
from nodes.agent.client import ControlPlaneClient, ControlPlaneError
from nodes.agent.supervisor import SupervisorSettings

DEFAULT_STATE_DIR = Path(__file__).resolve().parents[2] / "var" / "agent"


class AgentError(Exception):
    """A problem with the agent's options or its registration, said for the operator."""


def port_range(value: str) -> tuple[int, int]:
    low, sep, high = value.partition("-")
    try:
        first, last = int(low), int(high if sep else low)
    except ValueError:
        raise AgentError(f"--port-range expects LOW-HIGH, got {value!r}") from None
    if not (1 <= first <= last <= 65535):
        raise AgentError(f"--port-range {value!r} is not a range of ports")
    return first, last


def add_arguments(parser: argparse.ArgumentParser, default_state_dir: Path) -> None:
    env = os.environ.get
    parser.add_argument("--control-plane", default=env("CONTROLPLANE_URL", ""))
    parser.add_argument(
        "--credential",
        default=env("NODE_CREDENTIAL", ""),
        help="node credential (cpn-...) or, to self-register, NODE_BOOTSTRAP_TOKEN; "
        "prefer the NODE_CREDENTIAL environment variable (arguments show in ps)",
    )
    parser.add_argument("--name", default=env("NODE_NAME", socket.gethostname().lower()))
    parser.add_argument("--address", default=env("NODE_ADDRESS", "127.0.0.1"))
    parser.add_argument(
        "--bind-host", default=env("NODE_BIND_HOST", ""), help="engines listen here"
    )
    parser.add_argument("--state-dir", default=env("NODE_STATE_DIR", str(default_state_dir)))
    parser.add_argument("--port-range", default=env("NODE_PORT_RANGE", "8100-8199"))
    parser.add_argument("--interval", type=float, default=None, help="seconds per round")
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--stop-grace", type=float, default=15.0)
    parser.add_argument("--backoff-base", type=float, default=2.0)
    parser.add_argument("--backoff-cap", type=float, default=300.0)
    parser.add_argument("--crash-loop-after", type=int, default=5)
    parser.add_argument("--cpu", action="store_true", help="register as a CPU node")
    parser.add_argument(
        "--stop-workers-on-exit",
        action="store_true",
        help="stop every worker when the agent exits (default: leave them for re-adoption)",
    )


def run(options: dict[str, Any], say: Any = print) -> None:
    """Run the agent until SIGTERM or SIGINT; raises AgentError for the operator."""
    logging.getLogger("nodes.agent").setLevel(logging.INFO)
    if not options["control_plane"]:
        raise AgentError("--control-plane (or CONTROLPLANE_URL) is required")
    if not options["credential"]:
        raise AgentError("--credential (or NODE_CREDENTIAL) is required")
    credential: str = options["credential"]
    state_dir = Path(options["state_dir"]).resolve()
    if not credential.startswith("cpn-"):
        credential = bootstrap(options, credential, state_dir, say)
    supervisor_settings = SupervisorSettings(
        state_dir=state_dir,
        port_range=port_range(options["port_range"]),
        bind_host=options["bind_host"] or options["address"],
        start_timeout=options["start_timeout"],
        stop_grace=options["stop_grace"],
        backoff_base=options["backoff_base"],
        backoff_cap=options["backoff_cap"],
        crash_loop_after=options["crash_loop_after"],
    )
    agent = Agent(
        client=ControlPlaneClient(options["control_plane"], credential),
        name=options["name"],
        address=options["address"],
        settings=supervisor_settings,
        interval=options["interval"],
        force_cpu=options["cpu"],
    )

    def stop(signum: int, frame: Any) -> None:
        agent.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        agent.run(stop_workers_on_exit=options["stop_workers_on_exit"])
    except ControlPlaneError as exc:
        raise AgentError(f"the control plane refused this agent: {exc}") from exc


def bootstrap(options: dict[str, Any], token: str, state_dir: Path, say: Any = print) -> str:
    """Self-register with the bootstrap token; keep the issued credential in the state dir."""
    saved = state_dir / "credential"
    if saved.exists():
        return saved.read_text().strip()
    facts = discovery.discover(options["name"], force_cpu=options["cpu"])
    client = ControlPlaneClient(options["control_plane"], token)
    try:
        answer = client.register(
            {
                "name": options["name"],
                "address": options["address"],
                "cpu_count": facts["cpu_count"],
                "memory_bytes": facts["memory_bytes"],
                "devices": facts["devices"],
            }
        )
    except ControlPlaneError as exc:
        raise AgentError(f"self-registration failed: {exc}") from exc
    state_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(answer["credential"] + "\n")
    saved.chmod(0o600)
    say(f"registered node {options['name']}; credential kept in {saved}")
    return str(answer["credential"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nodes.agent",
        description="Run the node agent: register, heartbeat, and supervise this node's "
        "vLLM workers.",
    )
    add_arguments(parser, DEFAULT_STATE_DIR)
    options = vars(parser.parse_args(argv))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        run(options)
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
