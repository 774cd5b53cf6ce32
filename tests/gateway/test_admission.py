"""Quota checks and admission, without an engine: which quotas apply, the checks they become,
what a request reserves, and the refusals' wording and headers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from gateway import admission, quotas
from gateway.quotas import CONCURRENCY, COUNTER, Check
from gateway.request import parse
from gateway.snapshot import DeploymentRoute, QuotaLimits, QuotaSnapshot, Upstream
from models_registry.pricing import COST_UNIT, Prices
from tenants.scopes import QuotaScope, counter_name, scope_of

NOW = 1_830_297_599.5  # the last half second of 2027-12-31 (UTC)
ALL = {
    "requests_per_minute": 5,
    "tokens_per_minute": 100,
    "concurrent_requests": 2,
    "tokens_per_day": 1000,
    "tokens_per_month": 10000,
    "cost_per_day": 77,
    "cost_per_month": 999,
}


def limits(scope: QuotaScope = QuotaScope.TENANT, quota_id: int = 1, **kw: Any) -> QuotaLimits:
    values: dict[str, Any] = dict.fromkeys(ALL)
    values.update(kw)
    return QuotaLimits(quota_id=quota_id, scope=scope, **values)


def build(*quota: QuotaLimits) -> list[Check]:
    return quotas.build_checks(
        quota, tenant_id=7, key_id=8, model_id=9, reserve_tokens=40, reserve_cost=12, now=NOW
    )


def test_a_quota_with_every_limit_becomes_seven_checks_in_a_fixed_order() -> None:
    minute, day, month, next_minute = 30504959, "20271231", "202712", 1830297600.0
    assert build(limits(QuotaScope.KEY_MODEL, **ALL)) == [
        Check(f"cpq:t7:k8:m9:rpm:{minute}", "requests", COUNTER, 5, 1, 120, next_minute, False),
        Check(
            f"cpq:t7:k8:m9:tpm:{minute}", "tokens", COUNTER, 100, 40, 120, next_minute, False,
            "tokens",
        ),
        Check("cpq:t7:k8:m9:conc", "concurrency", CONCURRENCY, 2, 1, 900, NOW + 1, False),
        Check(
            f"cpq:t7:k8:m9:tpd:{day}", "tokens_per_day", COUNTER, 1000, 40, 172800, next_minute,
            True, "tokens",
        ),
        Check(
            f"cpq:t7:k8:m9:tpmo:{month}", "tokens_per_month", COUNTER, 10000, 40, 2764800,
            next_minute, True, "tokens",
        ),
        Check(
            f"cpq:t7:k8:m9:cpd:{day}", "cost_per_day", COUNTER, 77, 12, 172800, next_minute,
            True, "cost",
        ),
        Check(
            f"cpq:t7:k8:m9:cpmo:{month}", "cost_per_month", COUNTER, 999, 12, 2764800,
            next_minute, True, "cost",
        ),
    ]  # fmt: skip


def test_only_the_limits_a_quota_sets_become_checks() -> None:
    checks = build(limits(tokens_per_day=10), limits(QuotaScope.KEY, requests_per_minute=1))
    assert [c.kind for c in checks] == ["tokens_per_day", "requests"]
    assert checks[0].key.startswith("cpq:t7:tpd:")
    assert checks[1].key.startswith("cpq:t7:k8:rpm:")
    assert build(limits()) == []


@pytest.mark.parametrize(
    ("scope", "name"),
    [
        (QuotaScope.TENANT, "t7"),
        (QuotaScope.KEY, "t7:k8"),
        (QuotaScope.MODEL, "t7:m9"),
        (QuotaScope.KEY_MODEL, "t7:k8:m9"),
    ],
)
def test_each_scope_counts_under_its_own_name(scope: QuotaScope, name: str) -> None:
    assert build(limits(scope, requests_per_minute=1))[0].key.startswith(f"cpq:{name}:rpm:")


def test_a_scope_is_defined_by_which_ids_a_quota_names() -> None:
    for scope in QuotaScope:
        key_id, model_id = scope.ids_for(8, 9)
        assert scope_of(key_id, model_id) is scope
    assert counter_name(7, None, 9) == "t7:m9"


def test_every_quota_that_applies_to_the_request_is_found_and_no_other() -> None:
    snapshot = QuotaSnapshot(
        by_scope={
            (7, None, None): limits(QuotaScope.TENANT, 1),
            (7, 8, None): limits(QuotaScope.KEY, 2),
            (7, None, 9): limits(QuotaScope.MODEL, 3),
            (7, 8, 9): limits(QuotaScope.KEY_MODEL, 4),
            (7, 5, None): limits(QuotaScope.KEY, 5),  # another key
            (6, None, None): limits(QuotaScope.TENANT, 6),  # another tenant
        }
    )
    assert [q.quota_id for q in quotas.applicable(snapshot, 7, 8, 9)] == [1, 2, 3, 4]
    assert [q.quota_id for q in quotas.applicable(snapshot, 7, 8, 1)] == [1, 2]


def _routes(*prices: Prices) -> tuple[DeploymentRoute, ...]:
    ups = tuple(Upstream(i, 1, "http://x", "Bearer w", 1, False, p) for i, p in enumerate(prices))
    return (DeploymentRoute(deployment_id=1, weight=1, upstreams=ups),)


def test_a_request_reserves_its_prompt_bound_and_completion_limit_at_the_dearest_price() -> None:
    parsed = parse(b'{"model": "m", "prompt": "abcd", "max_tokens": 6}', "completions")
    cheap = Prices(Decimal(1), Decimal(0), Decimal(2))
    dear = Prices(Decimal(3), Decimal(0), Decimal(9))
    reserved = admission.reservation(parsed, "completions", _routes(cheap, dear), 1024)
    assert reserved.tokens == 4 + 6
    assert reserved.cost == int(Decimal(9) / 1_000_000 * 10 / COST_UNIT)


def test_without_a_limit_the_default_completion_is_reserved_and_embeddings_reserve_none() -> None:
    free = Prices(Decimal(0), Decimal(0), Decimal(0))
    parsed = parse(b'{"model": "m", "prompt": "ab"}', "completions")
    assert admission.reservation(parsed, "completions", _routes(free), 50).tokens == 52
    embed = parse(b'{"model": "m", "input": "ab"}', "embeddings")
    assert admission.reservation(embed, "embeddings", _routes(free), 50) == admission.Reservation(
        2, 0
    )


def test_a_rate_limit_refusal_is_a_429_with_retry_after_and_the_use_in_words() -> None:
    check = build(limits(requests_per_minute=5))[0]
    refused = quotas.Admission(allowed=False, checks=[check], refused=check, used=5)
    error = admission.refusal(refused, NOW)
    assert (error.status, error.type, error.code) == (
        429,
        "rate_limit_error",
        "rate_limit_exceeded",
    )
    assert "used 5 of 5" in error.message and (b"retry-after", b"1") in error.headers


def test_a_budget_refusal_is_insufficient_quota_and_says_when_one_request_is_too_big() -> None:
    check = build(limits(tokens_per_day=10))[0]  # reserves 40
    error = admission.refusal(quotas.Admission(allowed=False, refused=check), NOW)
    assert (error.type, error.code) == ("insufficient_quota", "quota_exceeded")
    assert "needs 40, more than the limit of 10" in error.message


def test_quotas_that_cannot_be_checked_are_a_503_to_retry() -> None:
    error = admission.refusal(quotas.Admission(allowed=False, unavailable=True), NOW)
    assert (error.status, error.code) == (503, "quota_unavailable")


def test_rate_limit_headers_come_from_the_tightest_minute_checks() -> None:
    verdict = quotas.Admission(allowed=True, requests=(5, 2, NOW + 0.5), tokens=(100, 60, NOW + 61))
    assert admission.ratelimit_headers(verdict, NOW) == [
        (b"x-ratelimit-limit-requests", b"5"),
        (b"x-ratelimit-remaining-requests", b"2"),
        (b"x-ratelimit-reset-requests", b"1s"),
        (b"x-ratelimit-limit-tokens", b"100"),
        (b"x-ratelimit-remaining-tokens", b"60"),
        (b"x-ratelimit-reset-tokens", b"1m1s"),
    ]
