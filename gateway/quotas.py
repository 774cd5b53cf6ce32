"""Quota admission and settlement: one atomic round trip per check, shared by every replica.

For each quota that applies to a request (tenant, tenant+key, tenant+model, tenant+key+model)
the gateway builds *checks*: rpm and tpm in fixed one-minute windows, concurrency as a sorted
set of in-flight request ids (members expire after a lease, so a crashed replica cannot leak
slots), and token/cost budgets in UTC day and month windows. A request reserves its worst case
(`max_tokens`, or GATEWAY_DEFAULT_MAX_TOKENS; cost at the version's dearest per-token price) and
settles to the real count when it ends. With Redis, admission is one Lua script and settlement
another (which also pushes the usage record into the metering buffer); without Redis, an
in-process store applies the same rules.

A check refuses when the counter already reached its limit, or when the reservation does not fit
in what remains (`used + reservation > limit`).

Over 400 lines on purpose: the rules (LIMITS, build_checks), the two Lua scripts and the two
stores that apply them must be read side by side; a change to one is a change to all.
"""

from __future__ import annotations

import calendar
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.snapshot import QuotaLimits, QuotaSnapshot
from tenants.scopes import QuotaScope, counter_name

logger = logging.getLogger(__name__)

COUNTER = 1
CONCURRENCY = 2
# A concurrency slot is freed by settlement; this lease only guards against lost settlements.
CONCURRENCY_LEASE_SECONDS = 900


@dataclass(frozen=True)
class Check:
    key: str
    kind: str  # requests | tokens | concurrency | tokens_per_day | ... | cost_per_month
    type: int  # COUNTER or CONCURRENCY
    limit: int
    increment: int
    ttl: int
    reset_at: float
    budget: bool
    settles: str = ""  # "" (never), "tokens" or "cost": what the settlement corrects


@dataclass
class Admission:
    allowed: bool
    checks: list[Check] = field(default_factory=list)
    refused: Check | None = None
    used: int = 0  # the refused check's counter
    # (limit, remaining, reset_at) of the tightest rpm and tpm checks, for x-ratelimit-* headers.
    requests: tuple[int, int, float] | None = None
    tokens: tuple[int, int, float] | None = None
    unavailable: bool = False  # Redis down and the policy refuses


# Tokens the chat template may add around each message, and around the whole prompt
# (role markers, BOS/EOS, the assistant's turn header): generous for the templates we serve.
TEMPLATE_TOKENS_PER_MESSAGE = 8
TEMPLATE_TOKENS_PER_PROMPT = 16


def prompt_token_bound(payload: dict[str, Any], endpoint: str) -> int:
    """An upper bound on the tokens of the request's prompt, without a tokenizer.

    Every token of a byte-level BPE or a WordPiece vocabulary covers at least one byte of
    text, so the UTF-8 length of the text bounds its tokens; token-id inputs count one each.
    Reserving this (plus the completion's limit) keeps a token budget from being overshot by
    requests admitted together: each one's actual use stays within what it reserved.
    """
    field = {"chat.completions": "messages", "completions": "prompt", "embeddings": "input"}
    value = payload.get(field.get(endpoint, ""))
    messages = len(value) if endpoint == "chat.completions" and isinstance(value, list) else 0
    return (
        _text_bound(value)
        + TEMPLATE_TOKENS_PER_MESSAGE * messages
        + (TEMPLATE_TOKENS_PER_PROMPT if endpoint == "chat.completions" else 0)
    )


def _text_bound(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, int | float):
        return 1  # a token id
    if isinstance(value, list):
        return sum(_text_bound(item) for item in value)
    if isinstance(value, dict):
        return sum(_text_bound(item) for item in value.values())
    return 0


def applicable(
    snapshot: QuotaSnapshot, tenant_id: int, key_id: int, model_id: int
) -> list[QuotaLimits]:
    """The quotas a request of this key and model must pass: at most one per scope."""
    found = []
    for scope in QuotaScope:
        limits = snapshot.by_scope.get((tenant_id, *scope.ids_for(key_id, model_id)))
        if limits is not None:
            found.append(limits)
    return found


def _next_month(now: datetime) -> datetime:
    return datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)


@functools.lru_cache(maxsize=4)
def _calendar_windows(minute: int) -> tuple[str, float, str, float]:
    """Day and month keys and resets; the same for a whole minute, so computed once per minute."""
    today = datetime.fromtimestamp(minute * 60, UTC)
    day_reset = calendar.timegm(today.date().timetuple()) + 86400.0
    return (
        today.strftime("%Y%m%d"),
        day_reset,
        today.strftime("%Y%m"),
        _next_month(today).timestamp(),
    )


@dataclass(frozen=True, slots=True)
class Limit:
    """How one limit field of a quota becomes a check."""

    field: str  # the QuotaLimits field holding the limit
    kind: str  # the check's name in refusals and metrics
    suffix: str  # of the counter's key
    window: str  # "minute", "day", "month", or "lease" (concurrency: no window)
    measures: str  # "requests" (one per request), "tokens" or "cost" (reserved, then settled)
    ttl: int  # seconds the counter outlives its window's start
    budget: bool  # a budget (refused with insufficient_quota, fail-closed by default)


LIMITS = (
    Limit("requests_per_minute", "requests", "rpm", "minute", "requests", 120, budget=False),
    Limit("tokens_per_minute", "tokens", "tpm", "minute", "tokens", 120, budget=False),
    Limit(
        "concurrent_requests",
        "concurrency",
        "conc",
        "lease",
        "requests",
        CONCURRENCY_LEASE_SECONDS,
        budget=False,
    ),
    Limit("tokens_per_day", "tokens_per_day", "tpd", "day", "tokens", 2 * 86400, budget=True),
    Limit("tokens_per_month", "tokens_per_month", "tpmo", "month", "tokens", 32 * 86400, True),
    Limit("cost_per_day", "cost_per_day", "cpd", "day", "cost", 2 * 86400, budget=True),
    Limit("cost_per_month", "cost_per_month", "cpmo", "month", "cost", 32 * 86400, budget=True),
)


def build_checks(
    quotas: Sequence[QuotaLimits],
    *,
    tenant_id: int,
    key_id: int,
    model_id: int,
    reserve_tokens: int,
    reserve_cost: int,
    now: float,
) -> list[Check]:
    """One check per limit set, for every quota that applies, in LIMITS' order."""
    minute = int(now // 60)
    day_key, day_reset, month_key, month_reset = _calendar_windows(minute)
    # window -> (the counter key's window part, when the window resets)
    windows = {
        "minute": (f":{minute}", (minute + 1) * 60.0),
        "day": (f":{day_key}", day_reset),
        "month": (f":{month_key}", month_reset),
        "lease": ("", now + 1),
    }
    increments = {"requests": 1, "tokens": reserve_tokens, "cost": reserve_cost}
    checks: list[Check] = []
    for limits in quotas:
        scope_ids = limits.scope.ids_for(key_id, model_id)
        base = "cpq:" + counter_name(tenant_id, *scope_ids)
        for spec in LIMITS:
            limit = getattr(limits, spec.field)
            if limit is None:
                continue
            window, reset_at = windows[spec.window]
            checks.append(
                Check(
                    key=f"{base}:{spec.suffix}{window}",
                    kind=spec.kind,
                    type=CONCURRENCY if spec.window == "lease" else COUNTER,
                    limit=limit,
                    increment=increments[spec.measures],
                    ttl=spec.ttl,
                    reset_at=reset_at,
                    budget=spec.budget,
                    settles="" if spec.measures == "requests" else spec.measures,
                )
            )
    return checks


def _summarize(admission: Admission, checks: Sequence[Check], values: Sequence[int]) -> None:
    """Fill the x-ratelimit-* figures from the counters after admission."""
    for check, value in zip(checks, values, strict=True):
        remaining = max(check.limit - value, 0)
        if check.kind == "requests":
            if admission.requests is None or remaining < admission.requests[1]:
                admission.requests = (check.limit, remaining, check.reset_at)
        elif check.kind == "tokens" and (
            admission.tokens is None or remaining < admission.tokens[1]
        ):
            admission.tokens = (check.limit, remaining, check.reset_at)


# KEYS: the checks' keys. ARGV: now, request id, then per check: type, limit, increment, ttl.
# Returns {0, value...} when admitted (the counters after the increments), or, refused,
# {index of the first refusing check, counter...} (the counters as they are, nothing applied).
ADMIT_LUA = """
local now = tonumber(ARGV[1])
local rid = ARGV[2]
local n = #KEYS
local values = {}
local used_all = {}
local refused = 0
for i = 1, n do
  local base = 2 + (i - 1) * 4
  local kind = tonumber(ARGV[base + 1])
  local limit = tonumber(ARGV[base + 2])
  local inc = tonumber(ARGV[base + 3])
  local used
  if kind == 2 then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    used = redis.call('ZCARD', KEYS[i])
  else
    used = tonumber(redis.call('GET', KEYS[i]) or '0')
  end
  used_all[i] = used
  if refused == 0 and (used >= limit or used + inc > limit) then
    refused = i
  end
  values[i] = used + inc
end
if refused > 0 then
  local out = {refused}
  for i = 1, n do out[i + 1] = used_all[i] end
  return out
end
for i = 1, n do
  local base = 2 + (i - 1) * 4
  local kind = tonumber(ARGV[base + 1])
  local inc = tonumber(ARGV[base + 3])
  local ttl = tonumber(ARGV[base + 4])
  if kind == 2 then
    redis.call('ZADD', KEYS[i], now + ttl, rid)
    redis.call('EXPIRE', KEYS[i], ttl)
  else
    redis.call('INCRBY', KEYS[i], inc)
    redis.call('EXPIRE', KEYS[i], ttl, 'NX')
  end
end
local out = {0}
for i = 1, n do out[i + 1] = values[i] end
return out
"""

# KEYS: the checks' keys, then the usage buffer list. ARGV: request id, usage record (or ""),
# then per check: type, delta. A counter whose window already expired is left alone.
SETTLE_LUA = """
local rid = ARGV[1]
local n = #KEYS - 1
for i = 1, n do
  local kind = tonumber(ARGV[1 + i * 2])
  local delta = tonumber(ARGV[2 + i * 2])
  if kind == 2 then
    redis.call('ZREM', KEYS[i], rid)
  elseif delta ~= 0 and redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('INCRBY', KEYS[i], delta)
  end
end
if ARGV[2] ~= '' then
  redis.call('RPUSH', KEYS[n + 1], ARGV[2])
end
return 1
"""


def settlement_deltas(
    checks: Sequence[Check], reserved_tokens: int, reserved_cost: int, tokens: int, cost: int
) -> list[int]:
    deltas = []
    for check in checks:
        if check.settles == "tokens":
            deltas.append(tokens - reserved_tokens)
        elif check.settles == "cost":
            deltas.append(cost - reserved_cost)
        else:
            deltas.append(0)
    return deltas


class RedisQuotaStore:
    """Counters in Redis, shared by every gateway replica."""

    def __init__(self, url: str, usage_list_key: str) -> None:
        import redis.asyncio as aioredis

        self.redis = aioredis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=1, max_connections=256
        )
        self.usage_list_key = usage_list_key
        self._admit = self.redis.register_script(ADMIT_LUA)
        self._settle = self.redis.register_script(SETTLE_LUA)

    async def admit(
        self, request_id: str, checks: list[Check], now: float
    ) -> tuple[int, list[int]]:
        """(-1, counters after the increments) when admitted; else (refusing index, counters)."""
        argv: list[Any] = [now, request_id]
        for check in checks:
            argv += [check.type, check.limit, check.increment, check.ttl]
        result = await self._admit(keys=[c.key for c in checks], args=argv)
        return int(result[0]) - 1, [int(v) for v in result[1:]]

    async def settle(
        self, request_id: str, checks: Sequence[Check], deltas: Sequence[int], usage: bytes
    ) -> None:
        argv: list[Any] = [request_id, usage]
        for check, delta in zip(checks, deltas, strict=True):
            argv += [check.type, delta]
        await self._settle(keys=[c.key for c in checks] + [self.usage_list_key], args=argv)

    async def push_usage(self, usage: bytes) -> None:
        await self.redis.rpush(self.usage_list_key, usage)

    async def close(self) -> None:
        await self.redis.aclose()


class MemoryQuotaStore:
    """The same rules in this process, for the embedded mode (one gateway process)."""

    def __init__(self, usage_sink: Callable[[bytes], None]) -> None:
        self.counters: dict[str, tuple[int, float]] = {}  # key -> (value, expires_at)
        self.sets: dict[str, dict[str, float]] = {}  # key -> {request id: expires_at}
        self.lock = threading.Lock()
        self.usage_sink = usage_sink

    def _value(self, key: str, now: float) -> int:
        value = self.counters.get(key)
        if value is None or value[1] <= now:
            self.counters.pop(key, None)
            return 0
        return value[0]

    async def admit(
        self, request_id: str, checks: list[Check], now: float
    ) -> tuple[int, list[int]]:
        with self.lock:
            used_all = []
            refused = -1
            for index, check in enumerate(checks):
                if check.type == CONCURRENCY:
                    members = self.sets.setdefault(check.key, {})
                    for rid in [r for r, exp in members.items() if exp <= now]:
                        del members[rid]
                    used = len(members)
                else:
                    used = self._value(check.key, now)
                used_all.append(used)
                if refused < 0 and (used >= check.limit or used + check.increment > check.limit):
                    refused = index
            if refused >= 0:
                return refused, used_all
            for check in checks:
                if check.type == CONCURRENCY:
                    self.sets[check.key][request_id] = now + check.ttl
                else:
                    current = self.counters.get(check.key)
                    if current is None or current[1] <= now:
                        self.counters[check.key] = (check.increment, now + check.ttl)
                    else:
                        self.counters[check.key] = (current[0] + check.increment, current[1])
            return -1, [
                used + check.increment for used, check in zip(used_all, checks, strict=True)
            ]

    async def settle(
        self, request_id: str, checks: Sequence[Check], deltas: Sequence[int], usage: bytes
    ) -> None:
        now = time.time()
        with self.lock:
            for check, delta in zip(checks, deltas, strict=True):
                if check.type == CONCURRENCY:
                    self.sets.get(check.key, {}).pop(request_id, None)
                elif delta:
                    current = self.counters.get(check.key)
                    if current is not None and current[1] > now:
                        self.counters[check.key] = (current[0] + delta, current[1])
        if usage:
            self.usage_sink(usage)

    async def push_usage(self, usage: bytes) -> None:
        self.usage_sink(usage)

    async def close(self) -> None:
        return None


QuotaStore = RedisQuotaStore | MemoryQuotaStore


async def admit(
    store: QuotaStore,
    request_id: str,
    checks: list[Check],
    *,
    now: float,
    rate_limits_when_down: str,
    budgets_when_down: str,
) -> Admission:
    if not checks:
        return Admission(allowed=True)
    try:
        refused, values = await store.admit(request_id, checks, now)
    except (TimeoutError, OSError, ConnectionError) as exc:
        return _when_down(checks, exc, rate_limits_when_down, budgets_when_down)
    except Exception as exc:
        import redis

        if isinstance(exc, redis.RedisError):
            return _when_down(checks, exc, rate_limits_when_down, budgets_when_down)
        raise
    if refused >= 0:
        admission = Admission(
            allowed=False, checks=checks, refused=checks[refused], used=values[refused]
        )
    else:
        admission = Admission(allowed=True, checks=checks)
    _summarize(admission, checks, values)
    return admission


def _when_down(
    checks: list[Check], exc: BaseException, rate_policy: str, budget_policy: str
) -> Admission:
    refuse = any(
        (check.budget and budget_policy == "refuse")
        or (not check.budget and rate_policy == "refuse")
        for check in checks
    )
    logger.warning("quota store unreachable (%s); %s", exc, "refusing" if refuse else "admitting")
    if refuse:
        return Admission(allowed=False, unavailable=True)
    # Admitted without a reservation: nothing to settle.
    return Admission(allowed=True)


def format_reset(seconds: float) -> str:
    """OpenAI's reset format: `1s`, `6m0s`, `1h2m3s`."""
    seconds = max(int(seconds + 0.999), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
