"""python -m reliability [--short] [--only NAME ...]: the fault scenarios and their table."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from devtools.progress import say

from .stack import ROOT, running_stack


def main() -> int:
    from .scenarios import FULL, SCENARIOS, SHORT, Row

    parser = argparse.ArgumentParser(
        prog="python -m reliability",
        description="Fault scenarios against the real stack on this machine (docs/reliability.md).",
    )
    parser.add_argument("--short", action="store_true", help="the CI version: shorter, lighter")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(SCENARIOS), metavar="NAME", help="run only these"
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "reliability")
    parser.add_argument("--keep", action="store_true", help="keep the agents' state and logs")
    args = parser.parse_args()
    if args.list:
        for name, scenario in SCENARIOS.items():
            summary = (scenario.__doc__ or "").strip().split("\n", 1)[0]
            print(f"{name:18} {summary}")
        return 0
    config = SHORT if args.short else FULL
    names = args.only or list(SCENARIOS)
    rows: list[Row] = []
    started = time.monotonic()
    with running_stack(args.workdir, args.keep) as stack:
        for name in names:
            say(f"scenario {name}: {config.duration:.0f}s of load, {config.concurrency} streams")
            try:
                row = SCENARIOS[name](stack, config)
            except Exception as exc:  # a scenario that breaks is a failed guarantee, reported
                row = Row(name)
                row.check(f"the scenario ran to its end ({exc.__class__.__name__}: {exc})", False)
                traceback.print_exc()
            rows.append(row)
            say(f"scenario {name}: {'ok' if row.ok else 'FAILED'}")
            if name != names[-1]:
                stack.wait_workers_ready(2, timeout=600)  # whole again before the next one
        print_report(rows, time.monotonic() - started, logs=args.workdir / "logs")
    return 0 if all(row.ok for row in rows) else 1


def print_report(rows: list[Any], elapsed: float, logs: Path) -> None:
    header = ["scenario", "sent", "client errors", "usage lost", "duplicated", "quota overshoot",
              "recovery"]  # fmt: skip
    table = [
        [
            row.scenario,
            str(row.sent),
            str(row.errors),
            "-" if row.lost is None else str(row.lost),
            "-" if row.duplicated is None else str(row.duplicated),
            row.overshoot,
            "-" if row.recovery is None else f"{row.recovery:.1f}s",
        ]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *table]) for i in range(len(header))]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in table:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
    print()
    for row in rows:
        print(f"{'PASS' if row.ok else 'FAIL'}  {row.scenario}")
        for what, ok in row.checks:
            print(f"   {'ok ' if ok else 'NO '} {what}")
        for note in row.notes:
            print(f"   ·   {note}")
    failed = sum(not row.ok for row in rows)
    print(f"\n{len(rows) - failed} of {len(rows)} scenarios kept every guarantee "
          f"in {elapsed:.0f}s; logs in {logs}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
