"""What a request costs: the one formula, used by the gateway at request time (from the prices
its route snapshot holds) and by `ModelVersion.cost` (from the version's own prices).

The gateway computes a request's cost once, with the price the request was routed with, and
that one figure becomes the quota settlement, the `gateway_cost_usd` metric and, carried in the
usage event, `UsageRecord.cost` (the bill). A price changed between a request and its flush
therefore changes none of them. The result is rounded to COST_UNIT, the bill's scale, so the
quota counters (integers of COST_UNIT) hold exactly the billed amount.

No Django imports: the gateway's hot path and the snapshot loader both use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

# UsageRecord.cost's scale (decimal_places=10); quota counters count cost in these units.
COST_UNIT = Decimal("0.0000000001")
MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Prices:
    """A version's prices, in USD per million tokens."""

    input: Decimal
    cached_input: Decimal
    output: Decimal

    @property
    def dearest_per_token(self) -> Decimal:
        """The most one token can cost: what a quota reservation assumes for every token."""
        return max(self.input, self.output) / MILLION


def cost(prices: Prices, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> Decimal:
    """Cost in USD, rounded to COST_UNIT; cached prompt tokens at the cached-input price."""
    cached = min(max(cached_tokens, 0), max(prompt_tokens, 0))
    uncached = max(prompt_tokens - cached, 0)
    amount = (
        Decimal(uncached) * prices.input
        + Decimal(cached) * prices.cached_input
        + Decimal(max(completion_tokens, 0)) * prices.output
    ) / MILLION
    return amount.quantize(COST_UNIT, rounding=ROUND_HALF_EVEN)


def cost_units(amount: Decimal) -> int:
    """An amount of USD as the integer a quota counter holds."""
    return int(amount / COST_UNIT)
