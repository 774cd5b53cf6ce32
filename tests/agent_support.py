"""Real node agents for the tests: `manage.py nodeagent` subprocesses, and the vLLM engines
they start, found by the ports they serve on so that a teardown can kill every one."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from devtools import processes
from devtools.commands import agent_command
from devtools.engine import engine_processes, kill_engines

# Finding and killing engines by port is devtools' (the reliability runner needs it too).
__all__ = ["AgentProcess", "engine_processes", "kill_engines"]


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
        options = ["--state-dir", str(self.state_dir), "--interval", "0.5", "--backoff-base", "1",
                   "--backoff-cap", "4", "--crash-loop-after", "3", "--stop-grace", "10",
                   "--start-timeout", str(self.start_timeout)]  # fmt: skip
        command = agent_command(self.url, self.name, self.port_range, options)
        self.process = processes.spawn(command, self.log_path, env=env)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        # To the agent only, not its group: on SIGTERM the agent stops its engines itself.
        processes.stop(self.process, 30, first=sig, group=False)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
