"""Deploy a model through the control plane and wait for its worker, for the GPU run.

Runs inside the control plane's environment (Django ORM, like an admin would through the
API) while the control plane, Celery (eager) and a node agent run beside it.

    python bench/gpu/deploy.py deploy NAME MODEL_DIR [--weights-bytes N] [--arg k=v ...]
    python bench/gpu/deploy.py stop NAME
    python bench/gpu/deploy.py tenant          # demo tenant + key for NAME models, printed

Prints progress, the worker's transitions, and what the GPU holds (NVML) once ready.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

import django  # noqa: E402

django.setup()

from models_registry.models import EngineRuntime, Model, ModelGrant, ModelVersion  # noqa: E402
from nodes.models import Deployment, Worker, WorkerEvent  # noqa: E402
from nodes.scheduler import memory_per_device  # noqa: E402
from tenants.models import ApiKey, Tenant  # noqa: E402


def gpu_memory() -> list[dict[str, object]]:
    import pynvml

    pynvml.nvmlInit()
    out = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
        out.append(
            {
                "index": i,
                "used_mib": mem.used // 2**20,
                "total_mib": mem.total // 2**20,
                "processes": [(p.pid, (p.usedGpuMemory or 0) // 2**20) for p in procs],
            }
        )
    return out


def parse_value(raw: str) -> object:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def deploy(args: argparse.Namespace) -> int:
    runtime = EngineRuntime.objects.get(name=args.runtime)
    model, _ = Model.objects.get_or_create(name=args.name)
    extra = dict(arg.split("=", 1) for arg in args.arg)
    version, _ = ModelVersion.objects.update_or_create(
        model=model,
        label="gpu-run",
        defaults={
            "weights_source": str(Path(args.model_dir).resolve()),
            "weights_size_bytes": args.weights_bytes,
            "kv_cache_bytes": args.kv_cache_bytes,
            "runtime": runtime,
            "state": "active",
            "max_model_len": args.max_model_len,
            "extra_args": {k: parse_value(v) for k, v in extra.items()},
            "price_input_per_million": Decimal("0.10"),
            "price_output_per_million": Decimal("0.30"),
        },
    )
    version.full_clean()
    deployment, _ = Deployment.objects.update_or_create(
        name=args.name.replace(".", "-").lower(),
        defaults={
            "model_version": version,
            "replicas": 1,
            "gpus_per_replica": 1,
            "desired_state": "running",
        },
    )
    estimate = memory_per_device(version, deployment.gpus_per_replica)
    print(
        f"deploy {deployment.name}: scheduler's estimate per GPU {estimate / 2**30:.1f} GiB",
        flush=True,
    )
    started = time.monotonic()
    seen = 0
    while time.monotonic() - started < args.timeout:
        worker = Worker.objects.filter(deployment=deployment).exclude(state="stopped").first()
        events = WorkerEvent.objects.filter(worker__deployment=deployment).order_by("id")
        for event in events[seen:]:
            print(
                f"  +{time.monotonic() - started:5.0f}s worker {event.worker_id}: "
                f"{event.from_state} -> {event.to_state} {event.reason[:160]}",
                flush=True,
            )
        seen = events.count()
        if worker and worker.state == "ready":
            gpus = list(worker.gpus.values_list("uuid", flat=True))
            print(
                f"ready after {time.monotonic() - started:.0f}s on {worker.node} GPUs {gpus} "
                f"port {worker.port} pid {worker.pid}",
                flush=True,
            )
            print("NVML:", json.dumps(gpu_memory()), flush=True)
            return 0
        if deployment.unschedulable_reason:
            deployment.refresh_from_db()
        if worker is None and deployment.unschedulable_reason:
            print("unschedulable:", deployment.unschedulable_reason, flush=True)
        time.sleep(2)
    print(f"timed out after {args.timeout}s", flush=True)
    return 1


def stop(args: argparse.Namespace) -> int:
    deployment = Deployment.objects.get(name=args.name.replace(".", "-").lower())
    deployment.replicas = 0
    deployment.save()
    started = time.monotonic()
    while Worker.objects.filter(deployment=deployment).exclude(state="stopped").exists():
        if time.monotonic() - started > args.timeout:
            print("workers still running", flush=True)
            return 1
        time.sleep(1)
    time.sleep(3)
    print(
        f"stopped {deployment.name} in {time.monotonic() - started:.0f}s; NVML:",
        json.dumps(gpu_memory()),
        flush=True,
    )
    return 0


def tenant(args: argparse.Namespace) -> int:
    org, _ = Tenant.objects.get_or_create(slug="gpu-demo", defaults={"name": "GPU demo"})
    for name in args.models:
        ModelGrant.objects.get_or_create(tenant=org, model=Model.objects.get(name=name))
    _, plaintext = ApiKey.issue(tenant=org, name=f"gpu-run-{int(time.time())}")
    print(plaintext)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("deploy")
    d.add_argument("name")
    d.add_argument("model_dir")
    d.add_argument("--runtime", default="vllm-cuda")
    d.add_argument("--weights-bytes", type=int, default=None)
    d.add_argument("--kv-cache-bytes", type=int, default=8 << 30)
    d.add_argument("--max-model-len", type=int, default=2048)
    d.add_argument("--arg", action="append", default=[])
    d.add_argument("--timeout", type=float, default=420)
    s = sub.add_parser("stop")
    s.add_argument("name")
    s.add_argument("--timeout", type=float, default=60)
    t = sub.add_parser("tenant")
    t.add_argument("models", nargs="+")
    args = parser.parse_args()
    return {"deploy": deploy, "stop": stop, "tenant": tenant}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
