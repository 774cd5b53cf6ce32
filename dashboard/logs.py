"""Where the dashboard gets a worker's log tail: this one function.

The node agent keeps each engine's output in a rotated file on its node and uploads the last
lines to the control plane (`Worker.log_tail`, through the agent API, with the engine key
already redacted there). The panel polls `dashboard:worker-log` and shows them.
"""

from __future__ import annotations

from dataclasses import dataclass

from nodes.agent import protocol
from nodes.models import Worker

TAIL_LINES = 200


@dataclass(frozen=True)
class LogTail:
    lines: list[str]
    source: str  # where the lines came from, shown under the panel
    available: bool


def worker_log_tail(worker: Worker, lines: int = TAIL_LINES) -> LogTail:
    """The last `lines` lines of the worker's engine output, newest last, passed through
    `redact` by the view."""
    if not worker.log_tail:
        return LogTail(
            lines=[],
            source="the node agent has not reported a log for this worker yet",
            available=False,
        )
    node = worker.node.name if worker.node is not None else "its node"
    return LogTail(
        lines=worker.log_tail.splitlines()[-lines:],
        source=f"the last lines the node agent on {node} reported",
        available=True,
    )


def redact(worker: Worker, lines: list[str]) -> list[str]:
    """The engine key out of every line shown (see protocol.redact for why here too)."""
    secret = worker.engine_api_key
    return [protocol.redact(line, secret) for line in lines]
