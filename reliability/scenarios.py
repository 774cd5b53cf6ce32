"""The fault scenarios: each puts the stack under load, injects one fault, and checks what the
issue promises. Each scenario has a tenant of its own, so its usage records are exactly those
of its requests: a record that matches no request the clients saw is a duplicate or a phantom.

Recovery time, by scenario: from the kill to the worker ready again (engine), from the agent's
restart to its first heartbeat (agent), from the server's return to the moment every request
finished before it is in the database (Redis, PostgreSQL), from the gateway's restart to its
first answer (gateway).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx

from devtools.engine import engine_processes
from devtools.progress import say, wait_until

from .load import Load, Outcome, run_load
from .stack import GATEWAY_PORTS, MODEL, NODES, Stack, db


@dataclass
class Config:
    duration: float  # seconds of load per scenario
    concurrency: int  # concurrent streams
    rpm_limit: int
    token_budget: int


# Buffered usage must reach the database this soon after Redis or PostgreSQL is back: the
# flush runs every 2 s; a flush lock left by a flusher that lost Redis expires in 15 s.
CATCH_UP_SECONDS = 30

SHORT = Config(duration=15, concurrency=6, rpm_limit=20, token_budget=1500)
FULL = Config(duration=60, concurrency=16, rpm_limit=60, token_budget=6000)


@dataclass
class Row:
    scenario: str
    sent: int = 0
    errors: int = 0  # client-visible (refusals of quota scenarios not counted)
    lost: int | None = None
    duplicated: int | None = None
    overshoot: str = "-"
    recovery: float | None = None
    checks: list[tuple[str, bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, what: str, ok: bool) -> None:
        self.checks.append((what, bool(ok)))

    @property
    def ok(self) -> bool:
        return all(ok for _, ok in self.checks)


# --- helpers ----------------------------------------------------------------------------
def gateways() -> dict[str, str]:
    return {name: f"http://127.0.0.1:{port}" for name, port in GATEWAY_PORTS.items()}


def make_tenant(slug: str, **quota: Any) -> tuple[Any, Any, str]:
    """A tenant granted the model, with one key (and a quota on it when given)."""
    from models_registry.models import Model, ModelGrant
    from tenants.models import ApiKey, Quota, Tenant

    tenant = Tenant.objects.create(slug=slug, name=slug)
    ModelGrant.objects.create(tenant=tenant, model=Model.objects.get(name=MODEL))
    key, plaintext = ApiKey.issue(tenant=tenant, name="load")
    if quota:
        Quota.objects.create(tenant=tenant, api_key=key, **quota)
    # The gateways hear of the key by pub/sub; wait until both know it.
    for url in gateways().values():
        wait_until(f"{url} to know the new key", partial(key_works, url, plaintext), 20)
    return tenant, key, plaintext


def key_works(url: str, key: str) -> bool:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.get(url + "/v1/models", headers=headers, timeout=5).status_code == 200


def engine_tokens(stack: Stack) -> float:
    """Prompt plus generation tokens the ready engines have counted themselves."""
    total = 0.0
    for worker in db(stack.ready_workers):
        text = httpx.get(f"http://127.0.0.1:{worker.port}/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith(("vllm:prompt_tokens_total{", "vllm:generation_tokens_total{")):
                total += float(line.rsplit(" ", 1)[1])
    return total


def recorded(request_ids: set[str]) -> set[str]:
    from controlplane.models import UsageRecord

    rows = UsageRecord.objects.filter(request_id__in=request_ids)
    return set(rows.values_list("request_id", flat=True))


def wait_recorded(request_ids: set[str], timeout: float) -> set[str]:
    """The ids among `request_ids` in the database, once all are there or time is up."""
    deadline = time.monotonic() + timeout
    found: set[str] = set()
    while True:
        missing = request_ids - found
        if missing:
            found |= db(partial(recorded, missing))
        if found >= request_ids or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def account(row: Row, tenant: Any, outcomes: list[Outcome], timeout: float = 90) -> list[Any]:
    """Lost: requests the clients saw (an x-request-id) with no record. Duplicated: records of
    the tenant beyond one per such request. Returns the tenant's records."""
    from django.db.models import Count

    from controlplane.models import UsageRecord

    seen = {o.request_id for o in outcomes if o.request_id}
    unanswered = sum(1 for o in outcomes if not o.request_id)
    found = wait_recorded(seen, timeout)
    records = db(lambda: list(UsageRecord.objects.filter(tenant=tenant)))
    doubled = db(
        lambda: (
            UsageRecord.objects.filter(tenant=tenant)
            .values("request_id")
            .annotate(n=Count("id"))
            .filter(n__gt=1)
            .count()
        )
    )
    row.lost = len(seen - found)
    row.duplicated = len(records) - len({r.request_id for r in records} & seen) + doubled
    row.check("every answered request has its usage record", row.lost == 0)
    row.check("no request recorded twice, no record without a request", row.duplicated == 0)
    if unanswered:
        row.notes.append(f"{unanswered} requests got no response headers at all")
    return records


def tally(row: Row, outcomes: list[Outcome]) -> None:
    row.sent = len(outcomes)
    row.errors = sum(1 for o in outcomes if o.kind in ("clean_error", "dirty_error"))
    dirty = [o for o in outcomes if o.kind == "dirty_error"]
    row.check("every client-visible error is OpenAI-shaped", not dirty)
    for o in dirty[:3]:
        row.notes.append(f"dirty: {o.gateway} {o.status} {o.detail}")
    latencies = sorted(o.latency for o in outcomes if o.kind == "ok")
    if latencies:
        row.notes.append(
            f"ok {len(latencies)}, p50 {latencies[len(latencies) // 2]:.2f}s, "
            f"max {latencies[-1]:.2f}s"
        )


def errors_after(outcomes: list[Outcome], moment: float) -> list[Outcome]:
    return [o for o in outcomes if o.started > moment and o.kind in ("clean_error", "dirty_error")]


def tokens_match(row: Row, stack: Stack, before: float, records: list[Any]) -> None:
    counted = engine_tokens(stack) - before
    metered = sum(r.prompt_tokens + r.completion_tokens for r in records)
    row.check(f"tokens metered ({metered}) = tokens the engines counted ({counted:.0f})",
              metered == counted)  # fmt: skip


def unnoticed(
    row: Row, stack: Stack, tenant: Any, outcomes: list[Outcome], engine_tokens_before: float
) -> None:
    """What a fault no client should notice must keep: no error, every request recorded once,
    and exactly the tokens the engines counted."""
    tally(row, outcomes)
    row.check("no client saw an error", row.errors == 0)
    records = account(row, tenant, outcomes)
    tokens_match(row, stack, engine_tokens_before, records)


def streaming_load(key: str, cfg: Config) -> Load:
    return Load(gateways(), key, MODEL, cfg.concurrency, stop_at=time.time() + cfg.duration)


# --- the scenarios ------------------------------------------------------------------------
def engine_kill(stack: Stack, cfg: Config) -> Row:
    """kill -9 one worker's engine under streamed load."""
    from nodes.models import Worker

    row = Row("kill -9 a worker's engine (streamed load)")
    tenant, _, key = make_tenant("rel-engine")
    victim = next(w for w in db(stack.ready_workers) if w.node.name == "rel-a")
    load = streaming_load(key, cfg)
    moments: dict[str, float] = {}

    def fault() -> None:
        time.sleep(cfg.duration / 3)
        moments["kill"] = time.time()
        os.kill(victim.pid, signal.SIGKILL)
        say(f"  killed engine pid {victim.pid} (worker {victim.pk} on rel-a)")

        def back() -> bool:
            w = Worker.objects.get(pk=victim.pk)
            return w.state == "ready" and w.pid != victim.pid

        wait_until("the worker to be ready again", lambda: db(back), 500, every=0.5)
        row.recovery = time.time() - moments["kill"]

    outcomes, _ = run_load(load, fault)
    tally(row, outcomes)
    kill = moments["kill"]
    in_flight = [o for o in outcomes if o.started <= kill <= o.ended]
    late = errors_after(outcomes, kill)
    row.check("requests sent after the kill saw no error (routed to the other worker)", not late)
    row.notes.append(f"{len(in_flight)} requests in flight at the kill, {row.errors} errors")
    account(row, tenant, outcomes)
    row.check("the worker was restarted and is ready", row.recovery is not None)
    return row


def agent_kill(stack: Stack, cfg: Config) -> Row:
    """kill -9 a node agent: its worker keeps serving; the restarted agent re-adopts it."""
    from nodes.models import Node

    row = Row("kill -9 a node agent, restart it")
    tenant, _, key = make_tenant("rel-agent")
    worker = next(w for w in db(stack.ready_workers) if w.node.name == "rel-a")
    agent = stack.processes["agent-rel-a"]
    before = engine_tokens(stack)
    load = streaming_load(key, cfg)

    def fault() -> None:
        time.sleep(cfg.duration / 4)
        agent.signal(signal.SIGKILL)
        assert agent.popen is not None
        agent.popen.wait(10)
        say("  killed the agent of rel-a; restarting it in 5 s")
        time.sleep(5)
        restarted = time.time()
        agent.start()

        def heartbeat() -> bool:
            node = Node.objects.get(name="rel-a")
            beat = node.last_heartbeat_at
            return beat is not None and beat.timestamp() > restarted

        wait_until("the agent's first heartbeat", lambda: db(heartbeat), 60, every=0.2)
        row.recovery = time.time() - restarted

    outcomes, _ = run_load(load, fault)
    unnoticed(row, stack, tenant, outcomes, before)
    engines = engine_processes([NODES["rel-a"]])
    leaders = {pgid for _pid, pgid, _cmd in engines}
    after = next((w for w in db(stack.ready_workers) if w.node.name == "rel-a"), None)
    row.check(
        "the restarted agent re-adopted the same engine (same pid, one engine on the node)",
        after is not None and after.pid == worker.pid and leaders == {worker.pid},
    )
    return row


def restart_service(
    name: str, stop: Callable[[], None], start: Callable[[], None]
) -> Callable[[Stack, Config], Row]:
    """Restart Redis or PostgreSQL under load: no usage record lost or duplicated."""

    def scenario(stack: Stack, cfg: Config) -> Row:
        row = Row(f"restart {name} under streamed load")
        tenant, _, key = make_tenant(f"rel-{name.lower()}")
        before = engine_tokens(stack)
        load = streaming_load(key, cfg)

        def fault() -> None:
            time.sleep(cfg.duration / 3)
            stop()
            say(f"  {name} stopped; starting it again in 3 s")
            time.sleep(3)
            start()
            back = time.time()
            done_before = {o.request_id for o in list(load.outcomes) if o.request_id}
            found = wait_recorded(done_before, 120)
            if found >= done_before:
                row.recovery = time.time() - back

        outcomes, _ = run_load(load, fault)
        unnoticed(row, stack, tenant, outcomes, before)
        row.check(
            f"usage caught up within {CATCH_UP_SECONDS}s of the restart",
            row.recovery is not None and row.recovery <= CATCH_UP_SECONDS,
        )
        return row

    return scenario


def redis_restart(stack: Stack, cfg: Config) -> Row:
    """Restart Redis (SHUTDOWN, then start) under streamed load."""
    return restart_service("Redis", stack.stop_redis, stack.start_redis)(stack, cfg)


def postgres_restart(stack: Stack, cfg: Config) -> Row:
    """Restart PostgreSQL (pg_ctl stop -m fast, then start) under streamed load."""
    return restart_service(
        "PostgreSQL", lambda: stack.pg_ctl("stop"), lambda: stack.pg_ctl("start")
    )(stack, cfg)


def gateway_stop(stack: Stack, cfg: Config) -> Row:
    """Stop one of the two gateway processes under load: the other keeps serving."""
    row = Row("stop one of two gateways (SIGTERM), restart it")
    tenant, _, key = make_tenant("rel-gateway")
    before = engine_tokens(stack)
    load = streaming_load(key, cfg)
    moments: dict[str, float] = {}
    gateway = stack.processes["gateway-a"]

    def fault() -> None:
        time.sleep(cfg.duration / 3)
        moments["stop"] = time.time()
        gateway.signal(signal.SIGTERM)
        assert gateway.popen is not None
        gateway.popen.wait(60)
        moments["stopped"] = time.time()
        say(f"  gateway-a stopped in {moments['stopped'] - moments['stop']:.1f}s")
        time.sleep(cfg.duration / 3)
        restarted = time.time()
        stack.start_server("gateway-a")
        url = gateways()["gateway-a"]
        wait_until("gateway-a to answer", partial(key_works, url, key), 60, every=0.1)
        row.recovery = time.time() - restarted

    outcomes, _ = run_load(load, fault)
    tally(row, outcomes)
    stop = moments["stop"]
    on_a = [o for o in outcomes if o.gateway == "gateway-a" and o.started <= stop <= o.ended]
    late = errors_after(outcomes, stop)
    row.check("requests sent after the stop saw no error (gateway-b served them)", not late)
    row.check(
        "requests in flight on the stopped gateway finished",
        all(o.kind == "ok" for o in on_a),
    )
    row.notes.append(
        f"{len(on_a)} in flight on gateway-a at the stop; "
        f"{sum(o.failovers > 0 for o in outcomes)} requests failed over"
    )
    records = account(row, tenant, outcomes)
    tokens_match(row, stack, before, records)
    return row


def quota_requests(stack: Stack, cfg: Config) -> Row:
    """A requests-per-minute limit, hammered through both gateways at once."""
    limit = cfg.rpm_limit
    row = Row(f"quota: {limit} requests/min across both gateways")
    tenant, _, key = make_tenant("rel-rpm", requests_per_minute=limit)
    # All in one minute window: start early in it.
    if 60 - time.time() % 60 < 30:
        time.sleep(60 - time.time() % 60 + 0.5)
    load = Load(gateways(), key, MODEL, cfg.concurrency * 2, stream=False, max_tokens=4)
    load.limit = limit * 3
    outcomes, _ = run_load(load)
    tally(row, outcomes)
    admitted = sum(1 for o in outcomes if o.kind != "refused")
    row.overshoot = f"{max(admitted - limit, 0)} requests"
    row.check(f"admitted {admitted} <= the limit of {limit}", admitted <= limit)
    row.check(
        "every refusal is a 429", all(o.status == 429 for o in outcomes if o.kind == "refused")
    )
    row.check("no client saw an error besides refusals", row.errors == 0)
    account(row, tenant, outcomes)
    return row


def quota_tokens(stack: Stack, cfg: Config) -> Row:
    """A daily token budget, hammered through both gateways at once.

    The overshoot must be at most one request's reservation (the gateway reserves a bound of
    the prompt plus max_tokens)."""
    from gateway.quotas import prompt_token_bound

    budget = cfg.token_budget
    row = Row(f"quota: {budget} tokens/day across both gateways")
    tenant, _, key = make_tenant("rel-tokens", tokens_per_day=budget)
    load = Load(gateways(), key, MODEL, cfg.concurrency * 2, stream=False, max_tokens=16)
    load.limit = 400
    outcomes, _ = run_load(load)
    tally(row, outcomes)
    records = account(row, tenant, outcomes)
    used = sum(r.prompt_tokens + r.completion_tokens for r in records)
    prompt = {"messages": [{"role": "user", "content": "Tell me about client 99 request 999."}]}
    reservation = prompt_token_bound(prompt, "chat.completions") + 16
    over = max(used - budget, 0)
    row.overshoot = f"{over} tokens (one reservation: {reservation})"
    row.check(f"used {used} <= budget {budget} + one reservation", over <= reservation)
    widest = max((r.prompt_tokens for r in records), default=0)
    row.check(
        "each prompt's real tokens stayed within the gateway's bound",
        widest <= prompt_token_bound(prompt, "chat.completions"),
    )
    row.check("the budget was used up and then refused", any(o.kind == "refused" for o in outcomes))
    row.check("no client saw an error besides refusals", row.errors == 0)
    return row


SCENARIOS: dict[str, Callable[[Stack, Config], Row]] = {
    "quota-requests": quota_requests,
    "quota-tokens": quota_tokens,
    "gateway-stop": gateway_stop,
    "redis-restart": redis_restart,
    "postgres-restart": postgres_restart,
    "agent-kill": agent_kill,
    "engine-kill": engine_kill,  # last: its worker restarts, which takes a while
}
