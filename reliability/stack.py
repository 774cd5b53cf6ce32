"""The whole stack on this machine, in processes of its own, for the fault scenarios.

PostgreSQL and Redis are instances of their own (a scratch cluster on port 5442, a server on
port 6389 with its append-only file on) so that a scenario can restart them without touching
the machine's own, which other work may be using. Every other part is the production code run
the production way: granian serving `controlplane.asgi` (one process for the control plane's
API, two as gateways), a Celery worker with its beat (usage flushes, lost-node checks,
scheduling), and `manage.py nodeagent` twice, as nodes rel-a and rel-b.

This module configures Django (its environment points at the scratch instances) before any of
the project's code is imported, so that the runner itself reads the same database.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools import processes
from devtools.commands import agent_command, celery_command, granian_command
from devtools.engine import kill_engines
from devtools.net import port_open
from devtools.progress import say, wait_until

ROOT = Path(__file__).resolve().parent.parent

PG_PORT = 5442
REDIS_PORT = 6389
API_PORT = 8401
GATEWAY_PORTS = {"gateway-a": 8411, "gateway-b": 8412}
NODES = {"rel-a": "8421-8429", "rel-b": "8431-8439"}
MODEL = "tiny-llama"


def pg_bin(name: str) -> str:
    """PostgreSQL's server programs are not on PATH on Debian: find the newest version's."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise SystemExit(
            f"{name} not found: install PostgreSQL's server (apt-get install postgresql)"
        )
    return candidates[-1]


@dataclass
class Process:
    name: str
    command: list[str]
    log: Path
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.popen = processes.spawn(self.command, self.log, env=self.env, cwd=ROOT)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to its group, then SIGKILL after `timeout` seconds."""
        processes.stop(self.popen, timeout)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass
class Stack:
    workdir: Path
    keep: bool = False
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)
    credentials: dict[str, str] = field(default_factory=dict)
    pg_data: Path | None = None
    as_postgres: list[str] = field(default_factory=list)

    # --- environment ------------------------------------------------------------------
    def configure(self) -> None:
        """The settings every process of the stack shares, then Django in this process."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.workdir / "logs", ignore_errors=True)  # this run's logs only
        (self.workdir / "logs").mkdir()
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:{PG_PORT}/controlplane",
            "REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
            # Production mode: Celery does the flushing and scheduling, not the request path.
            "CELERY_TASK_ALWAYS_EAGER": "0",
            "USAGE_FLUSH_IN_PROCESS": "0",
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(40),
            "KEY_PEPPER": secrets.token_urlsafe(40),
            "WORKER_KEY_SECRET": secrets.token_urlsafe(40),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "NODE_AGENT_INTERVAL_SECONDS": "1",
            "NODE_HEARTBEAT_TIMEOUT_SECONDS": "30",
            "GATEWAY_REFRESH_SECONDS": "5",
            "PYTHONUNBUFFERED": "1",
        }
        for name in ("CELERY_BROKER_URL", "PROMETHEUS_MULTIPROC_DIR"):
            self.env.pop(name, None)
        os.environ.update(self.env)
        import logging

        import django

        django.setup()
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per probe otherwise

    # --- PostgreSQL and Redis -----------------------------------------------------------
    def start_postgres(self) -> None:
        """A scratch cluster owned by the postgres user (PostgreSQL refuses to run as root)."""
        self.pg_data = Path(tempfile.mkdtemp(prefix="cp-reliability-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.pg_data, "postgres")
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*self.as_postgres, pg_bin("initdb"), "-D", str(self.pg_data), "-U", "postgres",
             "-A", "trust", "-E", "UTF8"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        self.pg_ctl("start")
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", "-qc",
             "CREATE DATABASE controlplane"],
            check=True,
        )  # fmt: skip

    def pg_ctl(self, action: str) -> None:
        assert self.pg_data is not None
        options = f"-p {PG_PORT} -c listen_addresses=127.0.0.1 -k {self.pg_data}"
        command = [*self.as_postgres, pg_bin("pg_ctl"), "-D", str(self.pg_data), "-w", "-s"]
        if action == "start":
            command += ["-l", str(self.pg_data / "server.log"), "-o", options, "start"]
        else:
            command += ["-m", "fast", "stop"]  # fast: what a crash-restarting host looks like
        subprocess.run(command, check=True)

    def start_redis(self) -> None:
        """AOF on, fsync every second: a restart keeps the usage buffer (docs/deployment.md)."""
        data = self.workdir / "redis"
        data.mkdir(exist_ok=True)
        process = Process(
            "redis",
            ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--dir",
             str(data), "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
            self.workdir / "logs" / "redis.log",
            dict(os.environ),
        )  # fmt: skip
        self.processes["redis"] = process
        process.start()
        wait_until("Redis", lambda: port_open(REDIS_PORT), 20)

    def stop_redis(self) -> None:
        """SHUTDOWN: Redis writes its AOF out and exits, as a restart by its service does."""
        subprocess.run(
            ["redis-cli", "-p", str(REDIS_PORT), "shutdown"], check=False, capture_output=True
        )
        process = self.processes["redis"]
        assert process.popen is not None
        process.popen.wait(30)

    # --- the control plane's processes -------------------------------------------------
    def add(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Process:
        process = Process(name, command, self.workdir / "logs" / f"{name}.log", env or self.env)
        self.processes[name] = process
        return process

    def granian(self, name: str, port: int) -> Process:
        return self.add(name, granian_command(port, extra=["--workers", "1"]))

    def start_server(self, name: str) -> None:
        port = API_PORT if name == "api" else GATEWAY_PORTS[name]
        self.processes[name].start()
        wait_until(f"{name} on port {port}", lambda: port_open(port), 60)

    def agent(self, name: str) -> Process:
        state_dir = str(self.workdir / "agents" / name)
        options = ["--state-dir", state_dir, "--interval", "0.5", "--backoff-base", "1",
                   "--backoff-cap", "4", "--start-timeout", "400"]  # fmt: skip
        return self.add(
            f"agent-{name}",
            agent_command(f"http://127.0.0.1:{API_PORT}", name, NODES[name], options),
            {**self.env, "NODE_CREDENTIAL": self.credentials[name]},
        )

    def start(self, replicas: int = 2) -> None:
        from django.core.management import call_command

        say(f"starting PostgreSQL (port {PG_PORT}) and Redis (port {REDIS_PORT}) of our own")
        self.start_postgres()
        self.start_redis()
        say("migrating, registering the engine runtime and the tiny model")
        call_command("migrate", "--noinput", verbosity=0)
        call_command("build_tiny_model", verbosity=0)
        call_command("register_runtime", "--cpu", verbosity=0)
        call_command("register_builtin_models", verbosity=0)
        self.make_nodes()

        say(f"starting the API (port {API_PORT}), two gateways {list(GATEWAY_PORTS.values())}")
        self.granian("api", API_PORT)
        for name, port in GATEWAY_PORTS.items():
            self.granian(name, port)
        for name in ("api", *GATEWAY_PORTS):
            self.start_server(name)
        schedule = self.workdir / "celerybeat-schedule"
        quiet = ["--without-gossip", "--without-mingle"]
        self.add("celery", celery_command(schedule, "INFO", quiet)).start()
        say("starting two node agents (rel-a, rel-b)")
        for name in NODES:
            self.agent(name).start()
        self.deploy(replicas)

    def make_nodes(self) -> None:
        from nodes import credentials
        from nodes.models import Node

        for name in NODES:
            node, _ = Node.objects.get_or_create(name=name, defaults={"address": "127.0.0.1"})
            self.credentials[name] = credentials.issue(node)

    def deploy(self, replicas: int) -> None:
        from decimal import Decimal

        from models_registry.models import ModelVersion
        from nodes.models import Deployment, Node

        wait_until(
            "both nodes to register",
            lambda: (
                Node.objects.filter(name__in=NODES, gpus__isnull=False).distinct().count()
                == len(NODES)
            ),
            90,
        )
        version = ModelVersion.objects.get(model__name=MODEL, label="builtin")
        # Prices, so that costs and cost budgets mean something in the records.
        version.price_input_per_million = Decimal("1.5")
        version.price_output_per_million = Decimal("6")
        version.save()
        Deployment.objects.create(
            name=MODEL, model_version=version, replicas=replicas, placement_strategy="spread"
        )
        say(f"deployed {MODEL} x{replicas} (spread); waiting for the engines (a minute or two)")
        self.wait_workers_ready(replicas, timeout=600)

    def ready_workers(self) -> list[Any]:
        from nodes.models import Worker

        return list(
            Worker.objects.filter(deployment__name=MODEL, state="ready").select_related("node")
        )

    def wait_workers_ready(self, count: int, timeout: float) -> list[Any]:
        started = time.monotonic()

        def check() -> list[Any] | None:
            for process in self.processes.values():
                if process.name.startswith("agent-") and not process.alive():
                    raise SystemExit(f"{process.name} exited:\n{process.tail()}")
            workers = db(self.ready_workers)
            return workers if len(workers) >= count else None

        workers: list[Any] = wait_until(f"{count} ready workers", check, timeout, every=1)
        say(f"{len(workers)} workers ready after {time.monotonic() - started:.0f}s")
        return workers

    # --- the end -----------------------------------------------------------------------
    def close(self) -> None:
        for name in [n for n in self.processes if n.startswith("agent-")]:
            self.processes[name].signal(signal.SIGKILL)
        kill_engines(NODES.values())
        for name in ("gateway-a", "gateway-b", "api", "celery"):
            if name in self.processes:
                self.processes[name].stop(timeout=15)
        if "redis" in self.processes and self.processes["redis"].alive():
            subprocess.run(
                ["redis-cli", "-p", str(REDIS_PORT), "shutdown", "nosave"],
                check=False,
                capture_output=True,
            )
        if self.pg_data is not None:
            with contextlib.suppress(subprocess.CalledProcessError):
                from django.db import connections

                connections.close_all()
                self.pg_ctl("stop")
            shutil.rmtree(self.pg_data, ignore_errors=True)
        if not self.keep:
            shutil.rmtree(self.workdir / "redis", ignore_errors=True)
            shutil.rmtree(self.workdir / "agents", ignore_errors=True)


def db[T](fn: Callable[[], T], attempts: int = 60) -> T:
    """Run an ORM read, riding out a database restart (the runner's connection breaks too)."""
    from django.db import InterfaceError, OperationalError, close_old_connections, connection

    for attempt in range(attempts):
        try:
            close_old_connections()
            return fn()
        except (OperationalError, InterfaceError):
            connection.close()
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def running_stack(workdir: Path, keep: bool, replicas: int = 2) -> Iterator[Stack]:
    """The stack, torn down whatever happens (SIGTERM included: it unwinds as an interrupt)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    stack = Stack(workdir=workdir, keep=keep)
    stack.configure()
    try:
        stack.start(replicas)
        yield stack
    finally:
        say("stopping the stack")
        stack.close()
        signal.signal(signal.SIGTERM, previous)
