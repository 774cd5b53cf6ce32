"""Percentiles for the benches and the reliability reports."""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(values: Iterable[float], q: float) -> float:
    """The value below which a fraction `q` of `values` lies (nearest rank, no interpolation:
    a reported latency is one a request really had); NaN when there are none."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]
