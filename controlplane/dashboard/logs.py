"""Where the dashboard gets a worker's log tail: this one function.

The node agent keeps each engine's output; until it offers the tail to the control plane, the
panel says so and shows the last error the agent reported (`Worker.last_error`). Wire the
agent's source in here and the panel (which polls `dashboard:worker-log`) shows it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    # No source yet: the node agent's log feed is built in parallel (see the module docstring).
    return LogTail(
        lines=[],
        source="the node agent has not reported a log for this worker",
        available=False,
    )


def redact(worker: Worker, lines: list[str]) -> list[str]:
    """An engine may echo its command line: its --api-key must never reach a browser."""
    secret = worker.engine_api_key
    return [line.replace(secret, "[engine key redacted]") for line in lines]
