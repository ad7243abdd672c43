"""Rates over rows: the Wilson 95% interval, the bound a ``min_rate`` / ``max_rate`` puts on it, and the
two-proportion test that compares a target's rate with its random controls' rate.

Pure arithmetic (``math`` only), so the loader, the checks, the renderers and the Python helpers share one
definition of "the rate passed". Why Wilson: the normal ("Wald") interval collapses to a point at 0 % and 100 %
and leaves [0, 1] for small counts; Wilson's score interval stays inside [0, 1] and keeps close to its nominal
coverage for the tens-to-hundreds of rows a dataset case holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: z of a two-sided 95% interval
Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials: ``(low, high)`` within [0, 1]; ``(0, 1)``
    for ``n == 0`` (nothing is known)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= k <= n:
        raise ValueError(f"successes {k} outside 0..{n}")
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    # exact ends: k == 0 has low 0, k == n has high 1 (the formula gives them up to rounding)
    return (0.0 if k == 0 else low), (1.0 if k == n else high)


@dataclass(frozen=True)
class Rate:
    """``k`` of ``n`` rows passed a per-row check; ``low``/``high`` its Wilson 95% interval."""

    k: int
    n: int

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.k, self.n)

    def text(self) -> str:
        low, high = self.interval
        return f"{self.value:.3f} [{low:.3f}, {high:.3f}] ({self.k}/{self.n})"


def rate_passes(rate: Rate, min_rate: float | None, max_rate: float | None, on_interval: bool = False) -> bool:
    """Whether ``rate`` meets its bounds. On the point estimate by default; ``on_interval``: the whole Wilson
    interval must (``min_rate`` ≤ low, high ≤ ``max_rate``), a claim made with 95% confidence."""
    low, high = rate.interval if on_interval else (rate.value, rate.value)
    if rate.n == 0:
        return False
    if min_rate is not None and low < min_rate:
        return False
    return not (max_rate is not None and high > max_rate)


def bound_text(min_rate: float | None, max_rate: float | None, on_interval: bool = False) -> str:
    """``rate >= 0.9`` / ``rate <= 0.05`` / both; ``interval low >= 0.9`` with ``on_interval``."""
    parts = []
    if min_rate is not None:
        parts.append(f"{'interval low' if on_interval else 'rate'} >= {min_rate:g}")
    if max_rate is not None:
        parts.append(f"{'interval high' if on_interval else 'rate'} <= {max_rate:g}")
    return " and ".join(parts) or "every row"


def two_proportion_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided p-value of the pooled two-proportion z-test that rate 1 (the target) exceeds rate 2 (the
    controls): small when the target achieves its effect clearly more often. 1.0 when either side is empty or
    both rates are 0 or 1 together (no evidence of a difference)."""
    if n1 <= 0 or n2 <= 0:
        return 1.0
    p1, p2 = k1 / n1, k2 / n2
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0.0:
        return 1.0 if p1 <= p2 else 0.0
    z = (p1 - p2) / se
    return 0.5 * math.erfc(z / math.sqrt(2))
