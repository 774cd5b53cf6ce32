"""Prometheus metrics for `/metrics`.

Several server processes: when PROMETHEUS_MULTIPROC_DIR is set (it must be, before start, for
granian/uvicorn with more than one worker), prometheus-client's multiprocess mode is used: each
process writes its samples to memory-mapped files there and a scrape, answered by any process,
sums them. Without it there is one process and the default registry. The in-flight gauge uses
`livesum`, so only live processes count. Fleet figures (workers by state, GPUs allocated) are read
from the database at scrape time, not per process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

REQUESTS = Counter(
    "gateway_requests",
    "Inference requests by tenant, model and HTTP status",
    ["tenant", "model", "status"],
)
PROMPT_TOKENS = Counter("gateway_prompt_tokens", "Prompt tokens", ["tenant", "model"])
CACHED_TOKENS = Counter(
    "gateway_cached_prompt_tokens",
    "Prompt tokens served from the prefix cache",
    ["tenant", "model"],
)
COMPLETION_TOKENS = Counter("gateway_completion_tokens", "Completion tokens", ["tenant", "model"])
COST = Counter("gateway_cost_usd", "Cost in USD at the versions' prices", ["tenant", "model"])
DURATION = Histogram(
    "gateway_request_duration_seconds",
    "Time from request to the last byte",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
TTFT = Histogram(
    "gateway_time_to_first_token_seconds",
    "Time from request to the first streamed chunk",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge(
    "gateway_in_flight_requests", "Requests being proxied now", multiprocess_mode="livesum"
)
QUOTA_REFUSALS = Counter("gateway_quota_refusals", "Requests refused by a quota, by kind", ["kind"])


class FleetCollector(Collector):
    """Workers by state and GPUs allocated, from the database at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.db import close_old_connections
        from django.db.models import Count

        from nodes.models import ACTIVE_WORKER_STATES, Worker, WorkerState

        close_old_connections()
        workers = GaugeMetricFamily("controlplane_workers", "Workers by state", labels=["state"])
        counts = dict(Worker.objects.values_list("state").annotate(n=Count("id")).order_by())
        for state in WorkerState.values:
            workers.add_metric([state], counts.get(state, 0))
        yield workers
        allocated = Worker.gpus.through.objects.filter(
            worker__state__in=ACTIVE_WORKER_STATES
        ).count()
        yield GaugeMetricFamily(
            "controlplane_gpus_allocated", "GPUs held by live workers", value=allocated
        )
        close_old_connections()

    def describe(self) -> Iterator[Any]:
        return iter(())  # collected lazily: never touch the database at registration


_fleet = FleetCollector()
if not MULTIPROCESS:
    REGISTRY.register(_fleet)


def render() -> tuple[bytes, str]:
    """The exposition for one scrape (blocking: call it in a thread)."""
    if not MULTIPROCESS:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(_fleet)
    return generate_latest(registry), CONTENT_TYPE_LATEST
