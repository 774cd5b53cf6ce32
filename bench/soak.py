"""Soak: hold 32 concurrent streams through both gateways for ten minutes, and report each
process's memory growth and the latency trend, minute by minute.

    .venv/bin/python bench/soak.py [--minutes 10] [--streams 32] [--max-tokens 64]

The stack is reliability's (reliability/stack.py): its own PostgreSQL and Redis, the API, two
gateway processes, a Celery worker, two node agents with one vLLM worker each. Memory is the
resident set of each process group (a granian server's workers, an engine's core process
included), sampled every 10 s; growth compares the first minute's mean with the last one's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from devtools.processes import group_members
from devtools.progress import say
from devtools.stats import percentile
from reliability.load import Load, Outcome, run_load
from reliability.stack import MODEL, ROOT, running_stack

SAMPLE_SECONDS = 10


def group_rss(pgid: int) -> int:
    """Resident bytes of every process in the group."""
    total = 0
    for pid in group_members(pgid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue  # it exited in between
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    with running_stack(ROOT / "var" / "soak", keep=False) as stack:
        from reliability.scenarios import gateways, make_tenant

        _, _, key = make_tenant("soak")
        groups = {name: p.pid for name, p in stack.processes.items() if p.alive()}
        for worker in stack.ready_workers():
            groups[f"engine-{worker.node.name}"] = worker.pid
        duration = args.minutes * 60
        load = Load(gateways(), key, MODEL, args.streams, max_tokens=args.max_tokens)
        stop_at = time.time() + duration
        load.stop_at = stop_at
        samples: list[tuple[float, dict[str, int]]] = []
        start = time.time()
        say(f"soak: {args.streams} streams for {args.minutes:g} min; sampling every 10 s")

        def sample() -> None:
            while time.time() < stop_at:
                samples.append((time.time() - start, {n: group_rss(g) for n, g in groups.items()}))
                done = len(load.outcomes)
                say(f"  {time.time() - start:5.0f}s  {done} requests done")
                time.sleep(SAMPLE_SECONDS)

        outcomes, _ = run_load(load, sample)
        report(outcomes, samples, start, groups, duration)
    return 0


def report(
    outcomes: list[Outcome], samples: list[tuple[float, dict[str, int]]], start: float,
    groups: dict[str, int], duration: float,
) -> None:  # fmt: skip
    minutes = max(int(duration // 60), 1)
    print("\nLatency by minute (streams by the minute they ended in):")
    print("| minute | requests | errors | req/s | p50 latency | p95 latency | p50 TTFT |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for minute in range(minutes + 1):
        low, high = minute * 60, (minute + 1) * 60 if minute < minutes else float("inf")
        these = [o for o in outcomes if low <= o.ended - start < high]
        ok = [o for o in these if o.kind == "ok"]
        ttfts = [o.ttft for o in ok if o.ttft is not None]
        # The last row: the streams still running when the load stopped, ending after it.
        label = str(minute + 1) if minute < minutes else "drain"
        rate = f"{len(these) / 60:.1f}" if minute < minutes else "-"
        print(
            f"| {label} | {len(these)} | {len(these) - len(ok)} | {rate} | "
            f"{percentile([o.latency for o in ok], 0.5):.2f}s | "
            f"{percentile([o.latency for o in ok], 0.95):.2f}s | {percentile(ttfts, 0.5):.3f}s |"
        )
    print("\nResident memory by process group (MiB): first minute's mean -> last minute's mean")
    print("| process | first | last | growth |")
    print("| --- | --- | --- | --- |")
    first = [s for t, s in samples if t < 60]
    last_start = (samples[-1][0] - 60) if samples else 0
    last = [s for t, s in samples if t >= last_start]
    for name in groups:
        a = statistics.mean(s[name] for s in first) / 2**20 if first else float("nan")
        b = statistics.mean(s[name] for s in last) / 2**20 if last else float("nan")
        growth = (b - a) / a * 100 if a else float("nan")
        print(f"| {name} | {a:.0f} | {b:.0f} | {b - a:+.1f} MiB ({growth:+.1f}%) |")
    errors = sum(o.kind != "ok" for o in outcomes)
    print(f"\n{len(outcomes)} streams, {errors} not ok, over {len(samples)} samples")


if __name__ == "__main__":
    sys.exit(main())
