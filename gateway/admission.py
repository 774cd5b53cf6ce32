"""Admission: what a request reserves in the quota counters, and the 429 when it does not fit.

A request reserves its worst case (docs/gateway.md, "Quotas"): an upper bound on its prompt's
tokens plus its completion limit, and that many tokens at the dearest per-token price among the
model's routed workers. Settlement (settle.py) later corrects the counters to the real use. The
checks themselves are built and applied by quotas.py; this module joins them to a request.
"""

from __future__ import annotations

import time
from decimal import Decimal

from django.conf import settings

from gateway import metrics, quotas
from gateway.context import Headers, RequestContext, Reservation
from gateway.errors import GatewayError
from gateway.request import ParsedRequest
from gateway.snapshot import DeploymentRoute, QuotaSnapshot
from models_registry.pricing import COST_UNIT


def reservation(
    parsed: ParsedRequest,
    endpoint: str,
    deployments: tuple[DeploymentRoute, ...],
    default_max_tokens: int,
) -> Reservation:
    completion = 0 if endpoint == "embeddings" else int(parsed.max_tokens or default_max_tokens)
    tokens = quotas.prompt_token_bound(parsed.payload, endpoint) + completion
    dearest = max(
        (u.prices.dearest_per_token for d in deployments for u in d.upstreams),
        default=Decimal(0),
    )
    return Reservation(tokens=tokens, cost=int(dearest * tokens / COST_UNIT))


async def admit(
    ctx: RequestContext,
    parsed: ParsedRequest,
    deployments: tuple[DeploymentRoute, ...],
    snapshot: QuotaSnapshot,
    store: quotas.QuotaStore,
    default_max_tokens: int,
) -> None:
    """Reserve in every quota that applies; raise the refusal when one does not fit."""
    assert ctx.model is not None
    limits = quotas.applicable(snapshot, ctx.key.tenant_id, ctx.key.key_id, ctx.model.model_id)
    if not limits:
        return
    ctx.reservation = reservation(parsed, ctx.endpoint, deployments, default_max_tokens)
    now = time.time()
    checks = quotas.build_checks(
        limits,
        tenant_id=ctx.key.tenant_id,
        key_id=ctx.key.key_id,
        model_id=ctx.model.model_id,
        reserve_tokens=ctx.reservation.tokens,
        reserve_cost=ctx.reservation.cost,
        now=now,
    )
    ctx.admission = await quotas.admit(
        store,
        ctx.request_id,
        checks,
        now=now,
        rate_limits_when_down=settings.GATEWAY_RATE_LIMITS_WHEN_REDIS_DOWN,
        budgets_when_down=settings.GATEWAY_BUDGETS_WHEN_REDIS_DOWN,
    )
    ctx.extra_headers = ratelimit_headers(ctx.admission, now)
    if not ctx.admission.allowed:
        if ctx.admission.refused is not None:
            metrics.QUOTA_REFUSALS.labels(ctx.admission.refused.kind).inc()
        raise refusal(ctx.admission, now)


def refusal(admission: quotas.Admission, now: float) -> GatewayError:
    """The answer to a refused admission: 503 when quotas cannot be checked, else a 429."""
    if admission.unavailable:
        return GatewayError(
            503,
            "Quotas cannot be checked right now; retry shortly.",
            type="service_unavailable",
            code="quota_unavailable",
            headers=[(b"retry-after", b"1")],
        )
    check = admission.refused
    assert check is not None
    retry_after = max(int(check.reset_at - now + 0.999), 1)
    if check.increment > check.limit:
        detail = f"this request needs {check.increment}, more than the limit of {check.limit}"
    else:
        detail = f"used {admission.used} of {check.limit}"
    return GatewayError(
        429,
        f"Rate limit reached for {check.kind.replace('_', ' ')}: {detail}. "
        f"Retry after {retry_after}s.",
        type="rate_limit_error" if not check.budget else "insufficient_quota",
        code="rate_limit_exceeded" if not check.budget else "quota_exceeded",
        headers=[(b"retry-after", str(retry_after).encode())],
    )


def ratelimit_headers(admission: quotas.Admission, now: float) -> Headers:
    """OpenAI's x-ratelimit-* headers, from the tightest rpm and tpm checks."""
    headers: Headers = []
    for name, window in (("requests", admission.requests), ("tokens", admission.tokens)):
        if window is None:
            continue
        limit, remaining, reset_at = window
        headers += [
            (f"x-ratelimit-limit-{name}".encode(), str(limit).encode()),
            (f"x-ratelimit-remaining-{name}".encode(), str(remaining).encode()),
            (f"x-ratelimit-reset-{name}".encode(), quotas.format_reset(reset_at - now).encode()),
        ]
    return headers
