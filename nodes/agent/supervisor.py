"""The worker supervisor: engine processes made to match the control plane's assignments.

Each worker runs as its own process group (``start_new_session``), so stopping it means
SIGTERM to the whole group, a grace period, then SIGKILL: vLLM's engine-core children never
outlive their API server. What runs is written to ``STATE_DIR/workers.json`` after every
change, so an agent that restarts finds its engines and adopts them instead of starting
duplicates. Every step of ``reconcile`` is idempotent: repeating it after a crash or a lost
report converges to the same place.

The engine key goes to the engine in its environment (``VLLM_API_KEY``), never on its command
line, so it shows neither in ``ps`` nor in the arguments vLLM logs at start.

Longer than the project's ~400 lines on purpose: reconcile, start, stop, probe, logs and
reports are one process lifecycle that shares ``running``/``failures`` and the state file;
split apart, the idempotence argument above would have to be read across modules.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nodes.agent import protocol
from nodes.agent.client import ControlPlaneClient, ControlPlaneError
from nodes.agent.protocol import (
    CRASH_LOOPING,
    DRAINING,
    FAILED,
    PENDING,
    READY,
    STARTING,
    STOPPED,
    Assignment,
    Report,
)

logger = logging.getLogger("nodes.agent")

# Environment an engine inherits from the agent; everything else (the agent's own secrets,
# DATABASE_URL, SECRET_KEY, NODE_CREDENTIAL) stays out.
PASSTHROUGH = {"PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "TZ", "LD_LIBRARY_PATH"}
PASSTHROUGH_PREFIXES = ("HF_", "VLLM_", "CUDA_", "NCCL_", "OMP_", "TRANSFORMERS_", "TORCH")


def worker_environment(
    runtime_env: Mapping[str, str], gpu_uuids: Sequence[str], api_key: str
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k in PASSTHROUGH or k.startswith(PASSTHROUGH_PREFIXES)
    }
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update({str(k): str(v) for k, v in runtime_env.items()})
    # Pinned by UUID (indexes can differ between NVML and CUDA). A CPU worker sees no GPU.
    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_uuids)
    env["VLLM_API_KEY"] = api_key
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ---------------------------------------------------------------------------------------------
# Processes, read from /proc (Linux), so adopted engines (not our children) are visible too.


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) of a process, or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces; fields follow the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(int(entry))
        if stat and stat[1] == pgid and stat[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------


@dataclass
class Running:
    """An engine this agent started (or adopted). Persisted in the state file."""

    worker_id: int
    pid: int
    pgid: int
    port: int
    fingerprint: str
    served_model_name: str
    log_path: str
    started_at: float
    state: str = STARTING  # STARTING until probed ready, then READY
    ready_since: float | None = None
    failed_probes: int = 0
    log_uploaded_size: int = -1
    log_uploaded_at: float = 0.0
    generation: int = 0  # the assignment's, when started; a raised one is a restart request


@dataclass
class Failures:
    consecutive: int = 0
    next_start_at: float = 0.0
    generation: int = 0  # of the assignment that failed; a newer one (a restart) starts afresh


@dataclass
class SupervisorSettings:
    state_dir: Path
    port_range: tuple[int, int] = (8100, 8199)
    bind_host: str = "127.0.0.1"
    start_timeout: float = 300.0
    stop_grace: float = 15.0
    backoff_base: float = 2.0
    backoff_cap: float = 300.0
    crash_loop_after: int = 5
    healthy_reset_seconds: float = 120.0
    failed_probes_limit: int = 3
    log_max_bytes: int = 10 << 20
    log_backups: int = 3
    log_tail_lines: int = 80
    log_upload_interval: float = 30.0


@dataclass
class Supervisor:
    settings: SupervisorSettings
    client: ControlPlaneClient
    running: dict[int, Running] = field(default_factory=dict)
    failures: dict[int, Failures] = field(default_factory=dict)
    children: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic
    _keys: dict[int, str] = field(default_factory=dict)

    # --- state file ----------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.settings.state_dir / "workers.json"

    @property
    def log_dir(self) -> Path:
        return self.settings.state_dir / "logs"

    def save_state(self) -> None:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        data = {
            "running": {str(k): asdict(v) for k, v in self.running.items()},
            # Monotonic times mean nothing after a restart; keep the counts and generations.
            "failures": {str(k): [v.consecutive, v.generation] for k, v in self.failures.items()},
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.state_file)  # atomic: a crash leaves the old or the new file

    def adopt(self) -> list[int]:
        """Re-adopt engines from a previous run of the agent that are still alive."""
        if not self.state_file.exists():
            return []
        try:
            data = json.loads(self.state_file.read_text())
        except ValueError:
            logger.error("state file %s is unreadable; starting afresh", self.state_file)
            return []
        adopted = []
        for raw in data.get("running", {}).values():
            run = Running(**raw)
            stat = _stat(run.pid)
            # Guard against a reused pid: same group, and its command line has our port.
            if (
                stat
                and stat[0] not in ("Z", "X")
                and stat[1] == run.pgid
                and str(run.port) in cmdline(run.pid)
            ):
                run.started_at = self.clock() - 1  # age unknown; probes decide from here
                if run.ready_since is not None:
                    run.ready_since = self.clock()
                self.running[run.worker_id] = run
                adopted.append(run.worker_id)
                logger.info(
                    "adopted worker %s (pid %s, port %s, %s)",
                    run.worker_id,
                    run.pid,
                    run.port,
                    run.state,
                )
            elif group_members(run.pgid):
                # The leader is gone but children linger: clean them up.
                self._kill_group(run.pgid)
        for worker_id, saved in data.get("failures", {}).items():
            # A bare count is what agents before the generation wrote.
            count, generation = saved if isinstance(saved, list) else (saved, 0)
            self.failures[int(worker_id)] = Failures(
                consecutive=int(count), generation=int(generation)
            )
        self.save_state()
        return adopted

    # --- reconcile -----------------------------------------------------------------------

    def reconcile(self, assignments: Sequence[Assignment]) -> None:
        wanted = {spec.id: spec for spec in assignments}
        for spec in assignments:
            self._keys[spec.id] = spec.api_key

        for worker_id, run in list(self.running.items()):
            assigned = wanted.get(worker_id)
            if assigned is None:
                logger.info("worker %s is no longer assigned here; stopping it", worker_id)
                self.stop(worker_id)
            elif not assigned.wanted:
                self._report(worker_id, DRAINING, reason="stopping: no longer wanted")
                self.stop(worker_id)
                self._report(worker_id, STOPPED, reason="stopped by the node agent")
                assigned.state = STOPPED  # reported; a failed report repeats next round
            elif assigned.fingerprint != run.fingerprint:
                # Its command, environment or devices changed, or a restart was asked for
                # (the worker's generation is in the fingerprint): replace the engine.
                self.stop(worker_id)
                why = (
                    "a restart was asked for"
                    if assigned.generation != run.generation
                    else "its configuration changed"
                )
                self._report(worker_id, FAILED, reason=f"{why}; restarting")
                assigned.state = FAILED
                self.failures[worker_id] = Failures(generation=assigned.generation)
            else:
                self._check(assigned, run)

        for worker_id, spec in wanted.items():
            if worker_id in self.running:
                continue
            if not spec.wanted:
                if spec.state != STOPPED:
                    self._report(worker_id, STOPPED, reason="stopped by the node agent")
                continue
            if spec.state in (STARTING, READY):
                # The control plane believes it runs, but nothing of ours does (it died while
                # the agent was down, or the agent's state was lost).
                self._report(worker_id, FAILED, reason="engine not running on the node; restarting")
                spec.state = FAILED
            failures = self.failures.get(worker_id)
            if failures and failures.generation != spec.generation:
                # A restart was asked for: no backoff, and a fresh count toward crash-looping.
                failures = self.failures[worker_id] = Failures(generation=spec.generation)
            if failures and failures.next_start_at > self.clock():
                continue
            self.start(spec)

        for worker_id in list(self.failures):
            if worker_id not in wanted:
                del self.failures[worker_id]
        self.save_state()

    def _check(self, spec: Assignment, run: Running) -> None:
        worker_id = run.worker_id
        self._rotate_log(Path(run.log_path))
        exit_code = self._exited(run)
        if exit_code is not False:
            self._kill_group(run.pgid)  # the leader died: no child may linger
            code = exit_code if isinstance(exit_code, int) else None
            self._fail(
                spec,
                run,
                f"engine exited with code {code}" if code is not None else "engine exited",
                exit_code=code,
            )
            return
        healthy = self._probe(run, spec.api_key)
        if spec.state in (PENDING, FAILED, CRASH_LOOPING):
            # A report got lost (or the agent restarted): catch the control plane up.
            self._report(worker_id, STARTING, reason="engine running", pid=run.pid, port=run.port)
            spec.state = STARTING
        if run.state == STARTING:
            if healthy:
                run.state, run.ready_since, run.failed_probes = READY, self.clock(), 0
                self._report(worker_id, READY, reason=f"answering on port {run.port}")
                logger.info("worker %s ready on port %s", worker_id, run.port)
            elif self.clock() - run.started_at > self.settings.start_timeout:
                self._stop_group(run)
                self._fail(
                    spec,
                    run,
                    f"did not become ready within {self.settings.start_timeout:.0f}s",
                )
            elif spec.state != STARTING:
                self._report(worker_id, STARTING, pid=run.pid, port=run.port)
            return
        if healthy:
            run.failed_probes = 0
            if spec.state != READY:
                self._report(worker_id, READY, reason=f"answering on port {run.port}")
            if (
                run.ready_since is not None
                and self.clock() - run.ready_since > self.settings.healthy_reset_seconds
            ):
                self.failures.pop(worker_id, None)
            self._maybe_upload_log(run)
            return
        run.failed_probes += 1
        if run.failed_probes >= self.settings.failed_probes_limit:
            self._stop_group(run)
            self._fail(spec, run, f"engine stopped answering ({run.failed_probes} failed probes)")

    def _fail(
        self, spec: Assignment, run: Running, reason: str, exit_code: int | None = None
    ) -> None:
        worker_id = run.worker_id
        del self.running[worker_id]
        children = self.children.pop(run.pid, None)
        if children is not None:
            children.poll()
        failures = self.failures.setdefault(worker_id, Failures(generation=spec.generation))
        failures.consecutive += 1
        delay = min(
            self.settings.backoff_base * 2 ** (failures.consecutive - 1), self.settings.backoff_cap
        )
        failures.next_start_at = self.clock() + delay
        tail = self.log_tail(Path(run.log_path), worker_id)
        logger.warning(
            "worker %s (deployment %s) failed on port %s: %s; restart %s in %.0fs",
            worker_id,
            spec.deployment,
            run.port,
            reason,
            failures.consecutive,
            delay,
        )
        self._report(worker_id, FAILED, reason=reason, exit_code=exit_code, log_tail=tail)
        if failures.consecutive >= self.settings.crash_loop_after:
            self._report(
                worker_id,
                CRASH_LOOPING,
                reason=f"{failures.consecutive} failures in a row, last: {reason}; "
                f"retrying every {delay:.0f}s",
                exit_code=exit_code,
            )
        self.save_state()

    # --- start / stop --------------------------------------------------------------------

    def allocate_port(self) -> int:
        low, high = self.settings.port_range
        taken = {run.port for run in self.running.values()}
        for port in range(low, high + 1):
            if port in taken:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                try:
                    probe.bind((self.settings.bind_host, port))
                except OSError:
                    continue
            return port
        raise RuntimeError(f"no free port in {low}-{high}")

    def start(self, spec: Assignment) -> Running | None:
        worker_id = spec.id
        try:
            port = self.allocate_port()
        except RuntimeError as exc:
            self._report(worker_id, FAILED, reason=str(exc))
            return None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"worker-{worker_id}.log"
        self._rotate_log(log_path, force=log_path.exists() and log_path.stat().st_size > 0)
        command = protocol.engine_command(spec, self.settings.bind_host, port)
        with open(log_path, "ab") as log:
            log.write(
                f"=== node agent: starting worker {worker_id} (deployment {spec.deployment})"
                f" on port {port} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                f"=== {' '.join(command)}\n".encode()
            )
            log.flush()
            try:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=worker_environment(spec.env, spec.gpu_uuids, spec.api_key),
                    start_new_session=True,  # its own process group, out of the agent's
                )
            except OSError as exc:
                run = Running(
                    worker_id, 0, 0, port, spec.fingerprint, "", str(log_path), self.clock()
                )
                self.running[worker_id] = run
                self._fail(spec, run, f"could not launch {command[0]}: {exc}")
                return None
        run = Running(
            worker_id=worker_id,
            pid=process.pid,
            pgid=process.pid,
            port=port,
            fingerprint=spec.fingerprint,
            served_model_name=spec.served_model_name,
            generation=spec.generation,
            log_path=str(log_path),
            started_at=self.clock(),
        )
        self.children[process.pid] = process
        self.running[worker_id] = run
        self.save_state()
        logger.info("worker %s started: pid %s, port %s", worker_id, process.pid, port)
        result = self._report(
            worker_id,
            STARTING,
            reason=f"engine launched on port {port}",
            pid=process.pid,
            port=port,
        )
        if result == 409 and worker_id in self.running:
            # The control plane refused (a port clash, or the worker moved on): undo; the next
            # round starts afresh. A network error keeps it running: the report is repeated.
            self.stop(worker_id)
            return None
        return run

    def stop(self, worker_id: int) -> None:
        run = self.running.pop(worker_id, None)
        if run is None:
            return
        self._stop_group(run)
        self.children.pop(run.pid, None)
        self.save_state()
        logger.info("worker %s stopped (pid %s, port %s)", worker_id, run.pid, run.port)

    def stop_all(self, report: bool = True) -> None:
        for worker_id in list(self.running):
            if report:
                self._report(worker_id, DRAINING, reason="node agent shutting down")
            self.stop(worker_id)
            if report:
                self._report(worker_id, STOPPED, reason="node agent shut down")

    def _stop_group(self, run: Running) -> None:
        if run.pgid <= 1:
            return
        self._signal_group(run.pgid, signal.SIGTERM)
        if not self._wait_group(run, self.settings.stop_grace):
            logger.warning(
                "worker %s ignored SIGTERM for %.0fs; killing its process group",
                run.worker_id,
                self.settings.stop_grace,
            )
            self._kill_group(run.pgid)
        self._wait_group(run, 5.0)

    def _kill_group(self, pgid: int) -> None:
        self._signal_group(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while group_members(pgid) and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)

    def _signal_group(self, pgid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)

    def _wait_group(self, run: Running, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._reap()
            if not group_members(run.pgid):
                return True
            time.sleep(0.1)
        return not group_members(run.pgid)

    def _reap(self) -> None:
        for process in list(self.children.values()):
            process.poll()

    def _exited(self, run: Running) -> int | bool | None:
        """False while running; the exit code (None when unknown) once it has exited."""
        process = self.children.get(run.pid)
        if process is not None:
            code = process.poll()
            return False if code is None else code
        return None if not alive(run.pid) else False

    # --- probes and logs -----------------------------------------------------------------

    def _probe(self, run: Running, api_key: str) -> bool:
        """Ready: /health answers 200 and /v1/models (with the key) lists the served name."""
        base = f"http://{self.settings.bind_host}:{run.port}"
        try:
            with urllib.request.urlopen(base + "/health", timeout=3) as response:  # noqa: S310
                if response.status != 200:
                    return False
            request = urllib.request.Request(  # noqa: S310
                base + "/v1/models", headers={"Authorization": f"Bearer {api_key}"}
            )
            with urllib.request.urlopen(request, timeout=3) as response:  # noqa: S310
                models = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return any(m.get("id") == run.served_model_name for m in models.get("data", []))

    def _rotate_log(self, path: Path, force: bool = False) -> None:
        """Copy-and-truncate rotation: the engine keeps its O_APPEND descriptor open."""
        try:
            size = path.stat().st_size
        except OSError:
            return
        if not force and size <= self.settings.log_max_bytes:
            return
        for n in range(self.settings.log_backups - 1, 0, -1):
            older = path.with_name(f"{path.name}.{n}")
            if older.exists():
                os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
        if self.settings.log_backups > 0:
            with open(path, "rb") as src, open(path.with_name(f"{path.name}.1"), "wb") as dst:
                dst.write(src.read())
        with open(path, "r+b") as f:
            f.truncate(0)

    def log_tail(self, path: Path, worker_id: int) -> str:
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(f.tell() - 64_000, 0))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        tail = "\n".join(text.splitlines()[-self.settings.log_tail_lines :])
        return protocol.redact(tail, self._keys.get(worker_id))

    def _maybe_upload_log(self, run: Running) -> None:
        try:
            size = Path(run.log_path).stat().st_size
        except OSError:
            return
        if size == run.log_uploaded_size:
            return
        if self.clock() - run.log_uploaded_at < self.settings.log_upload_interval:
            return
        try:
            self.client.upload_log(run.worker_id, self.log_tail(Path(run.log_path), run.worker_id))
            run.log_uploaded_size = size
            run.log_uploaded_at = self.clock()
        except ControlPlaneError as exc:
            logger.warning("could not upload the log of worker %s: %s", run.worker_id, exc)

    # --- reports -------------------------------------------------------------------------

    def _report(self, worker_id: int, state: str, **fields: Any) -> dict[str, Any] | int:
        """Report a transition; returns the answer, or the error status (0: unreachable)."""
        try:
            return self.client.transition(worker_id, Report(state, **fields))
        except ControlPlaneError as exc:
            if exc.status == 404:
                # The worker was deleted: whatever runs for it must go.
                logger.info("worker %s no longer exists; stopping it", worker_id)
                if worker_id in self.running:
                    self.stop(worker_id)
            elif exc.status == 409:
                logger.warning("control plane refused %s for worker %s: %s", state, worker_id, exc)
            else:
                logger.warning("could not report %s for worker %s: %s", state, worker_id, exc)
            return exc.status
