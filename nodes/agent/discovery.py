"""What hardware this host offers: GPUs through NVML where a driver exists, else a CPU node.

Standalone, so an operator (or the lead on the GPU machine) can check a host:

    python -m nodes.agent.discovery                   # JSON of the host's devices
    python -m nodes.agent.discovery --check-assignment GPU-UUID [GPU-UUID ...]
        # starts a child with the worker environment that assignment would get and prints
        # which CUDA devices it sees (needs torch in the python given by --python)

A host without GPUs registers ONE pseudo-device of kind "cpu" whose memory is the host's
memory; the scheduler lets several workers share it as long as their memory estimates fit.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from typing import Any

from nodes.agent import protocol


def _meminfo() -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts:
                    values[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return values


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def host_memory() -> tuple[int, int]:
    """(total, used) bytes of host memory."""
    info = _meminfo()
    total = info.get("MemTotal", 0)
    return total, max(total - info.get("MemAvailable", total), 0)


def nvml_devices() -> list[dict[str, Any]] | None:
    """The host's NVIDIA GPUs, or None when there is no NVML (no driver, no library)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # pynvml.NVMLError: no driver, or no GPU
        return None
    try:
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            devices.append(
                {
                    "index": index,
                    "uuid": uuid.decode() if isinstance(uuid, bytes) else uuid,
                    "name": name.decode() if isinstance(name, bytes) else name,
                    "kind": protocol.GPU,
                    "memory_total_bytes": int(memory.total),
                    "memory_used_bytes": int(memory.used),
                }
            )
        return devices
    finally:
        pynvml.nvmlShutdown()


def cpu_pseudo_device(node_name: str) -> dict[str, Any]:
    total, used = host_memory()
    return {
        "index": 0,
        # Unique per node (two agents on one host act as two nodes).
        "uuid": f"cpu-{node_name}",
        "name": f"CPU ({cpu_count()} cores)",
        "kind": protocol.CPU,
        "memory_total_bytes": total,
        "memory_used_bytes": used,
    }


def discover(node_name: str, *, force_cpu: bool = False) -> dict[str, Any]:
    gpus = None if force_cpu else nvml_devices()
    total, _ = host_memory()
    return {
        "hostname": socket.gethostname(),
        "cpu_count": cpu_count(),
        "memory_bytes": total,
        "devices": gpus if gpus else [cpu_pseudo_device(node_name)],
        "nvml": gpus is not None,
    }


def device_usage(devices: list[dict[str, Any]], node_name: str) -> list[dict[str, Any]]:
    """Current memory use of the registered devices, for heartbeats."""
    if any(d["kind"] == protocol.GPU for d in devices):
        fresh = nvml_devices() or []
        return [{"uuid": d["uuid"], "memory_used_bytes": d["memory_used_bytes"]} for d in fresh]
    _, used = host_memory()
    return [{"uuid": f"cpu-{node_name}", "memory_used_bytes": used}]


CHECK_SNIPPET = (
    "import json, os, torch\n"
    "n = torch.cuda.device_count()\n"
    "print(json.dumps({'CUDA_VISIBLE_DEVICES': os.environ.get('CUDA_VISIBLE_DEVICES'),"
    " 'device_count': n, 'devices': [{'name': torch.cuda.get_device_name(i),"
    " 'uuid': 'GPU-' + str(torch.cuda.get_device_properties(i).uuid)} for i in range(n)]}))\n"
)


def check_assignment(uuids: list[str], python: str) -> dict[str, Any]:
    """Run a child with the environment a worker holding ``uuids`` gets; report what it sees."""
    from nodes.agent.supervisor import worker_environment

    env = worker_environment({}, uuids, api_key="check-only")
    out = subprocess.run(
        [python, "-c", CHECK_SNIPPET], env=env, capture_output=True, text=True, timeout=120
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip()[-2000:], "returncode": out.returncode}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print this host's devices as JSON.")
    parser.add_argument("--name", default=socket.gethostname().split(".")[0].lower())
    parser.add_argument("--cpu", action="store_true", help="ignore GPUs (register as CPU node)")
    parser.add_argument("--check-assignment", nargs="+", metavar="GPU_UUID")
    parser.add_argument("--python", default=sys.executable, help="python with torch (check)")
    args = parser.parse_args(argv)
    if args.check_assignment:
        print(json.dumps(check_assignment(args.check_assignment, args.python), indent=2))
        return 0
    print(json.dumps(discover(args.name, force_cpu=args.cpu), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
