"""Processes: stopping a process group, and reading process groups from /proc (Linux).

Every long-lived process the tools start gets a session of its own (`start_new_session=True`),
so that a signal to its group reaches its children too (granian's workers, vLLM's engine core).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


def stop(
    process: subprocess.Popen[bytes] | None,
    timeout: float = 30,
    *,
    first: int = signal.SIGTERM,
    group: bool = True,
) -> None:
    """`first` (SIGTERM) to the process's group, SIGKILL after `timeout` seconds, then wait.
    A process that has exited already, or None, is left alone. `group=False` signals the
    process only (a node agent, whose own shutdown must stop its engines)."""
    if process is None or process.poll() is not None:
        return

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)

    send(first)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait(10)


def state_and_group(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) of a process, or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def live_processes() -> list[tuple[int, int]]:
    """(pid, process group) of every live (not zombie) process."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = state_and_group(int(entry))
            if stat is not None and stat[0] not in ("Z", "X"):
                found.append((int(entry), stat[1]))
    return found


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group."""
    return [pid for pid, group in live_processes() if group == pgid]


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def spawn(
    command: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `command` in a session of its own (so `stop` reaches its children too), its
    output appended to `log`."""
    with log.open("ab") as output:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            list(command),
            stdout=output,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
        )
