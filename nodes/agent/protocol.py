"""The contract between the control plane and the node agent, in the standard library only.

Both sides import this module: the control plane (``nodes.agent_api``) builds an
``Assignment`` per worker and validates ``Report`` bodies; the agent (``supervisor``) reads
assignments and sends reports. Nothing here may import Django: the agent runs on GPU hosts
that have neither the control plane's settings nor its secrets.

The agent and the control plane of one release speak the same protocol: upgrade them
together.

Worker states are named here, once. ``nodes.models.WorkerState`` takes its values from these
constants, and ``nodes.states.ALLOWED`` says which moves between them are legal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# --- worker states (see nodes/states.py for the machine) ---------------------------------
PENDING = "pending"
STARTING = "starting"
READY = "ready"
DRAINING = "draining"
STOPPED = "stopped"
FAILED = "failed"
CRASH_LOOPING = "crash_looping"

WORKER_STATES = (PENDING, STARTING, READY, DRAINING, STOPPED, FAILED, CRASH_LOOPING)

# --- what is wanted of a worker ----------------------------------------------------------
RUNNING = "running"  # desired: keep it running; STOPPED (above) is the other desired state
DESIRED_STATES = (RUNNING, STOPPED)

# --- device kinds ------------------------------------------------------------------------
GPU = "gpu"
CPU = "cpu"  # a host without GPUs registers one pseudo-device for its CPUs and memory


def is_exclusive(kind: str) -> bool:
    """The one home of "a GPU is exclusive, the CPU is shared": a GPU runs one worker at a time
    and is given to its engine alone (CUDA_VISIBLE_DEVICES); the CPU pseudo-device is shared by
    several workers as long as their memory estimates fit (the scheduler's rule)."""
    return kind == GPU


REDACTED = "[engine key redacted]"


def redact(text: str, engine_key: str | None) -> str:
    """Remove a worker's engine key from text that may have come from its engine's output.

    vLLM prints its arguments and environment-derived settings at start, so an engine log can
    carry the key. It is removed three times on the way to a browser, on purpose (defence in
    depth, each layer guarding against a bug in the one before): by the agent before it
    uploads a log tail (the key never leaves the host in a log), by the agent API before it
    stores one (an older or buggy agent), and by the dashboard before it shows one (rows
    written by any other path). All three call this function.
    """
    if not engine_key:
        return text
    return text.replace(engine_key, REDACTED)


@dataclass
class Assignment:
    """One worker the control plane wants on this node, as ``GET workers`` sends it.

    ``command`` is the whole engine command line except ``--host`` and ``--port``, which the
    agent chooses (``engine_command``); it never holds the engine key, which goes to the engine
    in its environment. ``fingerprint`` changes whenever the running engine would be stale
    (command, environment, devices, or a restart asked for by raising ``generation``); the
    agent replaces an engine whose fingerprint no longer matches.
    """

    id: int
    deployment: str
    desired_state: str
    state: str
    served_model_name: str
    command: list[str]
    fingerprint: str
    api_key: str
    env: dict[str, str] = field(default_factory=dict)
    device_kind: str = "cpu"
    gpu_uuids: list[str] = field(default_factory=list)
    port: int | None = None
    pid: int | None = None
    restarts: int = 0
    generation: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Assignment:
        """Read one entry of the feed; keys this agent does not know are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def wanted(self) -> bool:
        return self.desired_state != STOPPED


def engine_command(assignment: Assignment, host: str, port: int) -> list[str]:
    """The argv that starts the assigned engine, listening on ``host:port``."""
    return [*assignment.command, "--host", host, "--port", str(port)]


@dataclass
class Report:
    """A state change the agent reports for one of its workers (``POST …/transition``)."""

    state: str
    reason: str = ""
    pid: int | None = None
    port: int | None = None
    exit_code: int | None = None
    log_tail: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The request body: fields left unset are not sent."""
        return {k: v for k, v in asdict(self).items() if v is not None}


REPORT_FIELDS = tuple(f.name for f in fields(Report))
