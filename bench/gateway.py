"""Gateway overhead benchmark: the same load straight to a vLLM engine and through the gateway.

Starts a tiny-model worker and the control plane's ASGI app under granian, with
authentication, quotas (a tenant quota with rpm, tpm and daily token/cost budgets) and metering
all on, then alternates rounds of direct and gateway load (16 concurrent clients; plain and
streamed 16-token completions), and finally measures the latency the gateway adds at one client.

    make bench-gateway                      # SQLite + in-process counters, as `make up`
    DATABASE_URL=postgres://... REDIS_URL=redis://... make bench-gateway   # production parts

Its last line reads `gateway/direct throughput ratio: json=R1 stream=R2`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.commands import celery_command, granian_command  # noqa: E402
from devtools.engine import CPU_ENGINE_ARGS, ENGINE_PYTHON, TINY_MODEL, spawn_engine  # noqa: E402
from devtools.net import wait_http  # noqa: E402
from devtools.processes import group_members, spawn, stop  # noqa: E402
from devtools.stats import percentile  # noqa: E402

ENGINE_PORT = int(os.environ.get("BENCH_ENGINE_PORT", "8210"))
GATEWAY_PORT = int(os.environ.get("BENCH_GATEWAY_PORT", "8270"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "16"))
ROUND_SECONDS = float(os.environ.get("BENCH_ROUND_SECONDS", "6"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
MAX_TOKENS = 16
# Where the engine comes from and how it runs: the CPU build here by default; on a GPU host,
# e.g. BENCH_ENGINE_PYTHON=python3 BENCH_ENGINE_ARGS="--gpu-memory-utilization 0.2".
BENCH_ENGINE_PYTHON = os.environ.get("BENCH_ENGINE_PYTHON", str(ENGINE_PYTHON))
ENGINE_ARGS = os.environ.get("BENCH_ENGINE_ARGS", " ".join(CPU_ENGINE_ARGS)).split()

# Logs and the SQLite database of one run; made once the arguments are read (not for --help).
workdir: Path


def setup_world() -> tuple[str, str, int]:
    import django

    django.setup()
    from django.core.management import call_command

    from models_registry.models import EngineRuntime, Model, ModelGrant, ModelVersion, VersionState
    from nodes.models import Deployment, Node, Worker, WorkerState
    from tenants.models import ApiKey, Quota, Tenant

    call_command("migrate", verbosity=0)
    suffix = os.urandom(3).hex()
    tenant = Tenant.objects.create(slug=f"bench-{suffix}", name="Bench")
    runtime = EngineRuntime.objects.create(
        name=f"bench-{suffix}", version="0.32.0", python_path="x"
    )
    model = Model.objects.create(name=f"bench-tiny-{suffix}")
    version = ModelVersion.objects.create(
        model=model,
        label="v1",
        weights_source="local",
        runtime=runtime,
        state=VersionState.ACTIVE,
        price_input_per_million=Decimal("0.5"),
        price_output_per_million=Decimal("1.5"),
    )
    node = Node.objects.create(name=f"bench-{suffix}", address="127.0.0.1")
    deployment = Deployment.objects.create(name=f"bench-{suffix}", model_version=version)
    worker = Worker.objects.create(
        deployment=deployment, node=node, port=ENGINE_PORT, state=WorkerState.READY
    )
    ModelGrant.objects.create(tenant=tenant, model=model)
    _, key = ApiKey.issue(tenant=tenant, name="bench")
    # Generous limits: every request runs every check, none is refused.
    Quota.objects.create(
        tenant=tenant,
        requests_per_minute=10**7,
        tokens_per_minute=10**9,
        concurrent_requests=10**4,
        tokens_per_day=10**11,
        cost_per_day=Decimal(10**6),
    )
    return model.name, key, worker.pk


def start_engine(name: str, api_key: str) -> subprocess.Popen[bytes]:
    return spawn_engine(
        TINY_MODEL,
        name,
        ENGINE_PORT,
        api_key,
        workdir / "engine.log",
        python=BENCH_ENGINE_PYTHON,
        args=ENGINE_ARGS,
    )


def start_usage_flusher() -> subprocess.Popen[bytes] | None:
    """With Redis, as in production: a Celery worker with beat flushes the usage buffer."""
    if not os.environ.get("REDIS_URL"):
        return None  # embedded: the gateway process's own batch writer thread does it
    command = celery_command(workdir / "beat-schedule")
    env = dict(os.environ, CELERY_TASK_ALWAYS_EAGER="0")
    return spawn(command, workdir / "celery.log", env=env, cwd=ROOT)


def gateway_env() -> dict[str, str]:
    env = dict(os.environ)
    if env.get("REDIS_URL"):
        env["USAGE_FLUSH_IN_PROCESS"] = "0"  # the Celery worker flushes
    return env


def start_gateway() -> subprocess.Popen[bytes]:
    command = granian_command(GATEWAY_PORT, extra=["--loop", "uvloop", "--no-ws"])
    return spawn(command, workdir / "gateway.log", env=gateway_env(), cwd=ROOT)


async def load(
    url: str,
    key: str,
    model: str,
    stream: bool,
    clients: int,
    seconds: float | None,
    count: int | None = None,
) -> tuple[int, float, list[float]]:
    import aiohttp

    body = {
        "model": model,
        "prompt": "hello there",
        "max_tokens": MAX_TOKENS,
        "ignore_eos": True,
        "stream": stream,
    }
    headers = {"Authorization": f"Bearer {key}"}
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    deadline = started + seconds if seconds else None

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors, count
        while True:
            if deadline is not None and time.perf_counter() >= deadline:
                return
            if count is not None:
                if count <= 0:
                    return
                count -= 1
            t0 = time.perf_counter()
            try:
                async with session.post(
                    url + "/v1/completions", json=body, headers=headers
                ) as response:
                    if stream:
                        async for _ in response.content.iter_any():
                            pass
                    else:
                        await response.read()
                    if response.status != 200:
                        errors += 1
                        print(f"{url}: status {response.status}", flush=True)
            except aiohttp.ClientError as exc:
                errors += 1
                print(f"{url}: {exc!r}", flush=True)
                continue
            latencies.append(time.perf_counter() - t0)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return errors, time.perf_counter() - started, latencies


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children that were waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def gateway_cpu(proc: subprocess.Popen[bytes]) -> float:
    # granian runs the app in a worker child process: count the whole process group.
    total = 0.0
    for pid in group_members(proc.pid):
        try:
            total += cpu_seconds(pid)
        except (OSError, ValueError):
            continue  # it exited in between
    return total


def pct(values: list[float], q: float) -> float:
    """In milliseconds."""
    return percentile(values, q) * 1000


async def main(model: str, key: str, worker_id: int) -> None:
    from nodes.secrets import worker_api_key

    engine_key = worker_api_key(worker_id)
    engine = start_engine(model, engine_key)
    gateway = None
    flusher = start_usage_flusher()
    try:
        wait_http(
            f"http://127.0.0.1:{ENGINE_PORT}/health",
            180,
            process=engine,
            log=workdir / "engine.log",
        )
        gateway = start_gateway()
        wait_http(
            f"http://127.0.0.1:{GATEWAY_PORT}/v1/models",
            60,
            process=gateway,
            headers={"Authorization": f"Bearer {key}"},
            log=workdir / "gateway.log",
        )
        direct = (f"http://127.0.0.1:{ENGINE_PORT}", engine_key)
        through = (f"http://127.0.0.1:{GATEWAY_PORT}", key)
        print(
            f"bench: {CONCURRENCY} clients, {ROUNDS} alternating rounds of {ROUND_SECONDS}s, "
            f"{MAX_TOKENS}-token completions; logs in {workdir}",
            flush=True,
        )
        for stream in (False, True):  # warm both paths
            for url, k in (direct, through):
                await load(url, k, model, stream, CONCURRENCY, 1.5)
        ratios = {}
        for stream in (False, True):
            label = "stream" if stream else "json"
            totals = {
                "direct": [0, 0.0, []],
                "gateway": [0, 0.0, []],
            }  # requests, seconds, latencies
            gateway_cpu_used = 0.0
            for _ in range(ROUNDS):
                for name, (url, k) in (("direct", direct), ("gateway", through)):
                    cpu_before = gateway_cpu(gateway)
                    errors, elapsed, latencies = await load(
                        url, k, model, stream, CONCURRENCY, ROUND_SECONDS
                    )
                    if name == "gateway":
                        gateway_cpu_used += gateway_cpu(gateway) - cpu_before
                    if errors:
                        raise RuntimeError(f"{errors} failed requests to {name}")
                    totals[name][0] += len(latencies)
                    totals[name][1] += elapsed
                    totals[name][2] += latencies
            rates = {}
            for name, (n, seconds, latencies) in totals.items():
                rates[name] = n / seconds
                p50, p99 = pct(latencies, 0.5), pct(latencies, 0.99)
                print(
                    f"{label:6} {name:7}: {rates[name]:7.1f} req/s  p50 {p50:6.1f} ms  "
                    f"p99 {p99:6.1f} ms  ({n} requests)",
                    flush=True,
                )
            ratios[label] = rates["gateway"] / rates["direct"]
            per_request = 1000 * gateway_cpu_used / totals["gateway"][0]
            print(f"{label:6} gateway CPU per request: {per_request:.2f} ms", flush=True)
        for stream in (False, True):
            label = "stream" if stream else "json"
            p50 = {}
            for name, (url, k) in (("direct", direct), ("gateway", through)):
                _, _, latencies = await load(url, k, model, stream, 1, None, count=200)
                p50[name] = pct(latencies, 0.5)
            print(
                f"{label:6} one client: direct p50 {p50['direct']:.2f} ms, gateway p50 "
                f"{p50['gateway']:.2f} ms, added {p50['gateway'] - p50['direct']:.2f} ms",
                flush=True,
            )
        from controlplane.models import UsageRecord

        await asyncio.sleep(2)
        written = await asyncio.to_thread(
            lambda: UsageRecord.objects.filter(model__name=model).count()
        )
        print(f"usage records written so far: {written}")
        json_ratio, stream_ratio = ratios["json"], ratios["stream"]
        print(f"gateway/direct throughput ratio: json={json_ratio:.2f} stream={stream_ratio:.2f}")
    finally:
        stop(gateway, 20)
        stop(flusher, 20)
        stop(engine, 20)


SETTINGS = """settings, from the environment:
  BENCH_CONCURRENCY     concurrent clients (16)
  BENCH_ROUNDS          alternating direct/gateway rounds (3)
  BENCH_ROUND_SECONDS   seconds per round (6)
  BENCH_ENGINE_PORT     the engine's port (8210)
  BENCH_GATEWAY_PORT    the gateway's port (8270)
  BENCH_ENGINE_PYTHON   the engine's python (.venv-engine/bin/python)
  BENCH_ENGINE_ARGS     the engine's flags (the CPU build's)
  DATABASE_URL, REDIS_URL  PostgreSQL and Redis instead of SQLite and in-process counters"""


if __name__ == "__main__":
    argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=SETTINGS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{workdir}/bench.sqlite3")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    import uvloop

    uvloop.run(main(*setup_world()))
