"""Command lines of the control plane's own processes, as the dev tools start them.

`make up`, the gateway bench, the reliability stack and the tests each run some of these: the
ASGI app under granian, a Celery worker with beat, a node agent. The flags that differ between
them (workers, log level, the agent's timings) are the callers' `extra` arguments.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from devtools.net import HOST

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def granian_command(port: int, host: str = HOST, extra: Sequence[str] = ()) -> list[str]:
    """The control plane (API, dashboard and gateway: one ASGI app) served by granian."""
    return [
        PYTHON,
        "-m",
        "granian",
        "--interface",
        "asgi",
        "--host",
        host,
        "--port",
        str(port),
        *extra,
        "controlplane.asgi:application",
    ]


def celery_command(
    schedule: Path, loglevel: str = "WARNING", extra: Sequence[str] = ()
) -> list[str]:
    """A Celery worker that runs beat too (usage flushes, lost nodes, scheduling), solo pool:
    one process, as the dev tools need no more. Run it with cwd=ROOT."""
    return [
        PYTHON,
        "-m",
        "celery",
        "-A",
        "controlplane",
        "worker",
        "--beat",
        "--pool",
        "solo",
        "--loglevel",
        loglevel,
        "--schedule",
        str(schedule),
        *extra,
    ]


def agent_command(
    control_plane: str, name: str, port_range: str, extra: Sequence[str] = ()
) -> list[str]:
    """A node agent acting as node `name` on this host, its engines on ports of `port_range`
    (it reads its credential from NODE_CREDENTIAL in its environment)."""
    return [
        PYTHON,
        str(ROOT / "manage.py"),
        "nodeagent",
        "--control-plane",
        control_plane,
        "--name",
        name,
        "--address",
        HOST,
        "--port-range",
        port_range,
        *extra,
    ]
