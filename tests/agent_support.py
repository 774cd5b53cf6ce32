"""Real node agents for the tests: `manage.py nodeagent` subprocesses, and the vLLM engines
they start, found by the ports they serve on so that a teardown can kill every one."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class AgentProcess:
    """One node agent acting as node `name`, its workers on ports of `port_range`."""

    name: str
    credential: str
    state_dir: Path
    url: str
    port_range: str
    start_timeout: float = 300
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.state_dir.parent / f"{self.name}-agent.log"

    def start(self) -> None:
        env = {
            **os.environ,
            "NODE_CREDENTIAL": self.credential,
            "DEBUG": "1",
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        }
        command = [
            sys.executable,
            str(ROOT / "manage.py"),
            "nodeagent",
            "--control-plane",
            self.url,
            "--name",
            self.name,
            "--address",
            "127.0.0.1",
            "--state-dir",
            str(self.state_dir),
            "--port-range",
            self.port_range,
            "--interval",
            "0.5",
            "--backoff-base",
            "1",
            "--backoff-cap",
            "4",
            "--crash-loop-after",
            "3",
            "--stop-grace",
            "10",
            "--start-timeout",
            str(self.start_timeout),
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def port_bounds(port_range: str) -> tuple[int, int]:
    """ "8110-8119" -> (8110, 8120), for range()."""
    low, high = port_range.split("-")
    return int(low), int(high) + 1


def engine_processes(port_ranges: Iterable[str]) -> list[tuple[int, int, str]]:
    """(pid, pgid, cmdline) of every live vLLM process serving on a port of `port_ranges`."""
    ports = {str(p) for r in port_ranges for p in range(*port_bounds(r))}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] in ("Z", "X"):
            continue
        if "vllm.entrypoints.openai.api_server" in argv and ports & set(argv):
            found.append((int(entry), int(fields[2]), " ".join(argv)))
    return found


def kill_engines(port_ranges: Iterable[str]) -> None:
    """SIGKILL the process group of every engine on those ports (a teardown's last word)."""
    for _pid, pgid, _cmd in engine_processes(list(port_ranges)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
