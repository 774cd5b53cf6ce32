"""Settlement: when a request ends, whatever its outcome, turn it into one usage event, correct
the quota counters from the reservation to the real use, and record the metrics.

The cost is computed here, once, from the prices of the worker the request was routed to
(models_registry.pricing): the same figure settles the cost budgets, is added to
`gateway_cost_usd`, and travels in the usage event to become `UsageRecord.cost`. The event
rides the settlement's own round trip into the metering buffer (metering/buffer.py); if that
fails, it is held in `spill` and pushed again by GatewayState.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal

from gateway import metrics, quotas
from gateway.context import RequestContext
from metering.events import UsageEvent
from models_registry.pricing import cost, cost_units

logger = logging.getLogger(__name__)


def request_cost(ctx: RequestContext) -> Decimal:
    if ctx.upstream is None:
        return Decimal(0)
    return cost(ctx.upstream.prices, ctx.prompt_tokens, ctx.cached_tokens, ctx.completion_tokens)


def usage_event(ctx: RequestContext, amount: Decimal, elapsed: float) -> UsageEvent:
    upstream = ctx.upstream
    return UsageEvent(
        request_id=ctx.request_id,
        tenant_id=ctx.key.tenant_id,
        api_key_id=ctx.key.key_id,
        model_id=ctx.model.model_id if ctx.model else None,
        model_version_id=upstream.version_id if upstream else None,
        worker_id=upstream.worker_id if upstream else None,
        endpoint=ctx.endpoint,
        streamed=ctx.stream,
        prompt_tokens=ctx.prompt_tokens,
        cached_tokens=ctx.cached_tokens,
        completion_tokens=ctx.completion_tokens,
        sent_completion_tokens=ctx.sent_completion_tokens,
        usage_counted=ctx.usage_counted,
        latency_ms=int(elapsed * 1000),
        time_to_first_token_ms=int(ctx.ttft * 1000) if ctx.ttft is not None else None,
        status=ctx.status,
        http_status=ctx.http_status,
        created_at=ctx.created_at,
        cost=amount,
    )


async def settle(ctx: RequestContext, store: quotas.QuotaStore, spill: list[bytes]) -> None:
    elapsed = time.monotonic() - ctx.started
    amount = request_cost(ctx)
    usage = usage_event(ctx, amount, elapsed).encode()
    admission = ctx.admission
    checks: list[quotas.Check] = admission.checks if admission and admission.allowed else []
    deltas = quotas.settlement_deltas(
        checks,
        ctx.reservation.tokens,
        ctx.reservation.cost,
        ctx.prompt_tokens + ctx.completion_tokens,
        cost_units(amount),
    )
    try:
        await store.settle(ctx.request_id, checks, deltas, usage)
    except Exception:
        # Once per outage with the cause; the spill's retry loop reports the backlog.
        logger.log(
            logging.WARNING if not spill else logging.DEBUG,
            "settling %s failed; its usage is held for retry",
            ctx.request_id,
            exc_info=not spill,
        )
        spill.append(usage)
    record_metrics(ctx, amount, elapsed)


def record_metrics(ctx: RequestContext, amount: Decimal, elapsed: float) -> None:
    model = ctx.model
    model_name = model.name if model else "-"
    tenant = ctx.key.tenant_slug
    metrics.REQUESTS.labels(tenant, model_name, str(ctx.http_status)).inc()
    if model is None:
        return
    if ctx.prompt_tokens:
        metrics.PROMPT_TOKENS.labels(tenant, model_name).inc(ctx.prompt_tokens)
    if ctx.cached_tokens:
        metrics.CACHED_TOKENS.labels(tenant, model_name).inc(ctx.cached_tokens)
    if ctx.completion_tokens:
        metrics.COMPLETION_TOKENS.labels(tenant, model_name).inc(ctx.completion_tokens)
    if amount:
        metrics.COST.labels(tenant, model_name).inc(float(amount))
    metrics.DURATION.labels(model_name).observe(elapsed)
    if ctx.ttft is not None:
        metrics.TTFT.labels(model_name).observe(ctx.ttft)
