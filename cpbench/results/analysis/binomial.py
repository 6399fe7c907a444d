"""Exact binomial tails and Clopper-Pearson bounds for a count of items (pure functions, no SciPy needed).

A share of all items, such as the flip rate (items the base answers right and the candidate wrong), is a count k of n
i.i.d. items: k ~ Binomial(n, theta) exactly. Wilson's score bound keeps its level only on average over theta; its
one-sided false-pass rate at the limit oscillates with the count's discreteness up to 6.9 % at n = 100 and 5.9 % at
n = 1,000 (the largest over 4,200 values of theta in [0.005, 0.5], computed exactly). The exact tail never exceeds the
level; it is the non-randomised form of the uniformly most powerful one-sided test (docs/conformal.md,
"Shares of all items: exact binomial")."""

from __future__ import annotations

import math

from cpbench.results.analysis.stats import betainc


def cdf(k: int, n: int, theta: float) -> float:
    """P(X <= k) for X ~ Binomial(n, theta)."""
    if k < 0:
        return 0.0
    if k >= n or theta <= 0.0:
        return 1.0
    if theta >= 1.0:
        return 0.0
    return betainc(n - k, k + 1, 1.0 - theta)


def sf(k: int, n: int, theta: float) -> float:
    """P(X >= k) for X ~ Binomial(n, theta), from its own tail (1 - cdf would lose tails below 1e-16)."""
    if k <= 0:
        return 1.0
    if k > n or theta <= 0.0:
        return 0.0
    if theta >= 1.0:
        return 1.0
    return betainc(k, n - k + 1, theta)


def upper(k: int, n: int, level: float) -> float:
    """Clopper-Pearson one-sided upper bound at `level`: the theta with P(X <= k | theta) = 1 - level."""
    if k >= n:
        return 1.0
    return _solve(lambda t: cdf(k, n, t) - (1.0 - level), k / n, 1.0)


def lower(k: int, n: int, level: float) -> float:
    """Clopper-Pearson one-sided lower bound at `level`: the theta with P(X >= k | theta) = 1 - level."""
    if k <= 0:
        return 0.0
    return _solve(lambda t: (1.0 - level) - sf(k, n, t), 0.0, k / n)


def _solve(f, lo: float, hi: float) -> float:
    """The root of a monotone f on [lo, hi], by bisection (to 1e-12); an end where f does not change sign (a level
    below 1/2 puts the bound on the other side of the point) is returned as it is."""
    f_lo, f_hi = f(lo), f(hi)
    if (f_lo > 0) == (f_hi > 0):
        return lo if abs(f_lo) <= abs(f_hi) else hi
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        f_mid = f(mid)
        if (f_mid > 0) == (f_lo > 0):
            lo, f_lo = mid, f_mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)
