"""Figures for the overview and the usage pages, each a fixed number of aggregate queries
(no per-row queries), straight from PostgreSQL's truth: UsageRecord, Node, Gpu, Worker."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDay, TruncHour
from django.utils import timezone

from controlplane.models import UsageRecord, UsageStatus
from nodes.models import ACTIVE_WORKER_STATES, Gpu, Node, NodeState, Worker, WorkerState

# Rates are over the last minute: short enough to show a spike, long enough not to flicker.
RATE_WINDOW = timedelta(seconds=60)
TROUBLED_WORKER_STATES = (WorkerState.FAILED, WorkerState.CRASH_LOOPING)


@dataclass
class Overview:
    nodes_by_state: list[tuple[str, str, int]]
    workers_by_state: list[tuple[str, str, int]]
    gpu_count: int
    gpus_in_use: int
    gpu_memory_total: int
    gpu_memory_used: int
    requests_per_second: float
    tokens_per_second: float
    error_rate: float | None
    requests_today: int
    tokens_today: int
    cost_today: Decimal
    troubled_workers: list[Worker] = field(default_factory=list)

    @property
    def node_count(self) -> int:
        return sum(n for _, _, n in self.nodes_by_state)

    @property
    def worker_count(self) -> int:
        return sum(n for _, _, n in self.workers_by_state)

    @property
    def gpu_memory_percent(self) -> int:
        return (
            round(100 * self.gpu_memory_used / self.gpu_memory_total)
            if self.gpu_memory_total
            else 0
        )


def _by_state(rows: Any, choices: Any) -> list[tuple[str, str, int]]:
    counts = {row["state"]: row["n"] for row in rows}
    return [(value, label, counts.get(value, 0)) for value, label in choices]


def start_of_today() -> datetime:
    now = timezone.now()
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def traffic(usage: QuerySet[UsageRecord]) -> dict[str, Any]:
    """Rates over the last minute and totals since midnight (UTC) for a set of records."""
    now = timezone.now()
    window_start = now - RATE_WINDOW
    figures = usage.filter(created_at__gte=min(window_start, start_of_today())).aggregate(
        window_requests=Count("id", filter=Q(created_at__gte=window_start)),
        window_errors=Count(
            "id", filter=Q(created_at__gte=window_start) & ~Q(status=UsageStatus.OK)
        ),
        window_tokens=Coalesce(
            Sum(
                F("prompt_tokens") + F("completion_tokens"), filter=Q(created_at__gte=window_start)
            ),
            0,
        ),
        today_requests=Count("id", filter=Q(created_at__gte=start_of_today())),
        today_tokens=Coalesce(
            Sum(
                F("prompt_tokens") + F("completion_tokens"),
                filter=Q(created_at__gte=start_of_today()),
            ),
            0,
        ),
        today_cost=Sum("cost", filter=Q(created_at__gte=start_of_today())),
    )
    seconds = RATE_WINDOW.total_seconds()
    window_requests = figures["window_requests"]
    return {
        "requests_per_second": window_requests / seconds,
        "tokens_per_second": figures["window_tokens"] / seconds,
        "error_rate": (figures["window_errors"] / window_requests) if window_requests else None,
        "requests_today": figures["today_requests"],
        "tokens_today": figures["today_tokens"],
        "cost_today": figures["today_cost"] or Decimal(0),
    }


def overview() -> Overview:
    nodes = Node.objects.values("state").annotate(n=Count("id"))
    workers = Worker.objects.values("state").annotate(n=Count("id"))
    gpus = Gpu.objects.aggregate(
        n=Count("id"),
        total=Coalesce(Sum("memory_total_bytes"), 0),
        used=Coalesce(Sum("memory_used_bytes"), 0),
    )
    in_use = Gpu.objects.filter(workers__state__in=ACTIVE_WORKER_STATES).distinct().count()
    troubled = list(
        Worker.objects.filter(state__in=TROUBLED_WORKER_STATES)
        .select_related("node", "deployment__model_version__model")
        .order_by("-updated_at")[:20]
    )
    return Overview(
        nodes_by_state=_by_state(nodes, NodeState.choices),
        workers_by_state=_by_state(workers, WorkerState.choices),
        gpu_count=gpus["n"],
        gpus_in_use=in_use,
        gpu_memory_total=gpus["total"],
        gpu_memory_used=gpus["used"],
        troubled_workers=troubled,
        **traffic(UsageRecord.objects.all()),
    )


# --- usage over time ---------------------------------------------------------------------


@dataclass
class UsageReport:
    rows: list[dict[str, Any]]
    bucket: str  # "day" or "hour"
    charts: dict[str, Any]
    totals: dict[str, Any]


def filtered_usage(
    usage: QuerySet[UsageRecord], *, start: date, end: date, tenant: Any, model: Any
) -> QuerySet[UsageRecord]:
    tz = timezone.get_current_timezone()
    since = datetime.combine(start, time.min, tzinfo=tz)
    until = datetime.combine(end + timedelta(days=1), time.min, tzinfo=tz)
    usage = usage.filter(created_at__gte=since, created_at__lt=until)
    if tenant is not None:
        usage = usage.filter(tenant=tenant)
    if model is not None:
        usage = usage.filter(model=model)
    return usage


def usage_report(usage: QuerySet[UsageRecord], *, start: date, end: date) -> UsageReport:
    """One GROUP BY (period, tenant, model) feeds the table, the charts and the CSV."""
    bucket = "hour" if (end - start).days < 2 else "day"
    trunc = TruncHour("created_at") if bucket == "hour" else TruncDay("created_at")
    rows: list[dict[str, Any]] = [
        dict(row)
        for row in usage.annotate(period=trunc)
        .values("period", "tenant__slug", "model__name")
        .annotate(
            requests=Count("id"),
            errors=Count("id", filter=~Q(status=UsageStatus.OK)),
            prompt_tokens=Coalesce(Sum("prompt_tokens"), 0),
            cached_tokens=Coalesce(Sum("cached_tokens"), 0),
            completion_tokens=Coalesce(Sum("completion_tokens"), 0),
            cost=Coalesce(Sum("cost"), Decimal(0)),
        )
        .order_by("period", "tenant__slug", "model__name")
    ]
    for row in rows:
        row["model__name"] = row["model__name"] or "(deleted model)"
        row["total_tokens"] = row["prompt_tokens"] + row["completion_tokens"]
    return UsageReport(
        rows=rows,
        bucket=bucket,
        charts=_charts(rows, bucket, start, end),
        totals={
            "requests": sum(r["requests"] for r in rows),
            "errors": sum(r["errors"] for r in rows),
            "total_tokens": sum(r["total_tokens"] for r in rows),
            "cost": sum((r["cost"] for r in rows), Decimal(0)),
        },
    )


def _periods(bucket: str, start: date, end: date) -> list[datetime]:
    tz = timezone.get_current_timezone()
    first = datetime.combine(start, time.min, tzinfo=tz)
    last = datetime.combine(end + timedelta(days=1), time.min, tzinfo=tz)
    step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    periods = []
    moment = first
    while moment < last:
        periods.append(moment)
        moment += step
    return periods


def _charts(rows: list[dict[str, Any]], bucket: str, start: date, end: date) -> dict[str, Any]:
    """Series for Chart.js: every period on the axis, zero where nothing happened."""
    periods = _periods(bucket, start, end)
    index = {p: i for i, p in enumerate(periods)}
    label_format = "%H:%M" if bucket == "hour" else "%b %d"
    charts: dict[str, Any] = {"labels": [p.strftime(label_format) for p in periods]}
    for metric in ("total_tokens", "requests", "cost"):
        for group, key in (("tenant", "tenant__slug"), ("model", "model__name")):
            series: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(periods))
            for row in rows:
                position = index.get(row["period"])
                if position is not None:
                    series[row[key]][position] += float(row[metric])
            charts[f"{metric}_by_{group}"] = [
                {"label": name, "data": data} for name, data in sorted(series.items())
            ]
    return charts


CSV_HEADER = [
    "period",
    "tenant",
    "model",
    "requests",
    "errors",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
]


def csv_rows(report: UsageReport) -> list[list[str]]:
    return [
        [
            row["period"].isoformat(),
            row["tenant__slug"],
            row["model__name"],
            str(row["requests"]),
            str(row["errors"]),
            str(row["prompt_tokens"]),
            str(row["cached_tokens"]),
            str(row["completion_tokens"]),
            str(row["total_tokens"]),
            f"{row['cost']:.6f}",
        ]
        for row in report.rows
    ]
