"""Benchmark the scheduler's placement core: 1,000 deployments onto 1,000 nodes of 8 GPUs.

    .venv/bin/python bench/scheduler.py [--nodes 1000] [--deployments 1000] [--seed 7]

Runs the same filters and scorers as `nodes.scheduler.schedule()` (which adds only the
database reads and writes around them) on in-memory snapshots, for both strategies, and
prints how long placement took and how fragmented the cluster is afterwards: free GPUs on
partly used nodes are "fragmented" (no 8-GPU replica can use them).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodes.scheduler import DeviceView, NodeView, Replica, place

GIB = 1 << 30
# (GPUs per replica, share of deployments): mostly small models, some tensor-parallel ones.
SHAPES = [(1, 0.5), (2, 0.25), (4, 0.15), (8, 0.10)]


def cluster(nodes: int, gpus: int) -> list[NodeView]:
    out = []
    for n in range(nodes):
        devices = [
            DeviceView(id=n * gpus + i, index=i, kind="gpu", total=141 * GIB, free=141 * GIB)
            for i in range(gpus)
        ]
        out.append(NodeView(id=n, name=f"node-{n:04d}", devices=devices))
    return out


def workload(deployments: int, rng: random.Random, strategy: str) -> list[tuple[Replica, int]]:
    sizes, weights = zip(*SHAPES, strict=True)
    out = []
    for d in range(deployments):
        devices = rng.choices(sizes, weights)[0]
        replica = Replica(
            deployment_id=d,
            devices=devices,
            memory_per_device=rng.choice([20, 40, 70, 120]) * GIB,
            strategy=strategy,
        )
        out.append((replica, rng.randint(1, 3)))
    return out


def run(nodes: int, deployments: int, gpus: int, seed: int, strategy: str) -> None:
    rng = random.Random(seed)
    snapshot = cluster(nodes, gpus)
    wanted = workload(deployments, rng, strategy)
    requested = sum(r.devices * n for r, n in wanted)
    placed = unplaced = 0
    started = time.perf_counter()
    for replica, count in wanted:
        for _ in range(count):
            if place(snapshot, replica) is None:
                unplaced += 1
            else:
                placed += 1
    elapsed = time.perf_counter() - started
    busy_per_node = [sum(1 for d in n.devices if d.busy) for n in snapshot]
    free = sum(gpus - b for b in busy_per_node)
    fragmented = sum(gpus - b for b in busy_per_node if 0 < b < gpus)
    empty_nodes = sum(1 for b in busy_per_node if b == 0)
    full_nodes = sum(1 for b in busy_per_node if b == gpus)
    print(
        f"{strategy:8s} {deployments} deployments ({placed + unplaced} replicas, "
        f"{requested} GPUs asked) on {nodes} nodes x {gpus} GPUs: "
        f"{elapsed:.2f} s ({elapsed / max(placed + unplaced, 1) * 1000:.2f} ms/replica); "
        f"placed {placed}, unschedulable {unplaced}; GPUs free {free}, "
        f"fragmented {fragmented} (on {nodes - empty_nodes - full_nodes} partly used nodes), "
        f"empty nodes {empty_nodes}, full nodes {full_nodes}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    for strategy in ("binpack", "spread"):
        run(args.nodes, args.deployments, args.gpus, args.seed, strategy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
