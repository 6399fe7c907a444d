"""Small statistics the analyses share, in numpy only (scipy is a test dependency, not a runtime one)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=32)
def _resample_weights(r: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, r) counts of how often each split is drawn in each resample, divided by r.

    The mean of a resample is then one matrix product, and every cell and metric reuses the same draws (common
    random numbers), which keeps a whole leaderboard's intervals consistent and fast.
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, r, size=(n_boot, r))
    counts = np.zeros((n_boot, r))
    np.add.at(counts, (np.arange(n_boot)[:, None], idx), 1.0)
    counts /= r
    counts.setflags(write=False)
    return counts


def paired_bootstrap(
    candidate: np.ndarray, baseline: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[np.ndarray | float, np.ndarray | float, np.ndarray | float]:
    """Mean paired difference over splits and its percentile bootstrap interval (resampling whole splits).

    `candidate[r]` and `baseline[r]` were measured on the same calibration/test split r, so each split contributes
    one difference; resampling splits keeps the pairing. The interval describes the uncertainty of the
    split-averaged difference given these items (how much it would move with other random splits), not the
    uncertainty from sampling the items themselves. Arrays of shape (R, m) give m metrics at once.
    """
    d = np.asarray(candidate, dtype=float) - np.asarray(baseline, dtype=float)
    mean = d.mean(axis=0)
    if d.shape[0] < 2:
        nan = np.full_like(mean, math.nan) if d.ndim > 1 else math.nan
        return (mean if d.ndim > 1 else float(mean)), nan, nan
    boot = _resample_weights(d.shape[0], n_boot, seed) @ d
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(boot, [tail, 100.0 - tail], axis=0)
    if d.ndim == 1:
        return float(mean), float(lo), float(hi)
    return mean, lo, hi


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b (tie-corrected), O(n^2): n is a handful of recipes. NaN with fewer than 2 untied pairs."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i, j = np.triu_indices(len(x), k=1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    n0 = len(i)
    n1, n2 = int((sx == 0).sum()), int((sy == 0).sum())
    denom = math.sqrt((n0 - n1) * (n0 - n2))
    if denom == 0:
        return math.nan
    return float((sx * sy).sum() / denom)


# ------------------------------------------------------------------------------------------- Student t quantile
def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):  # converges in O(sqrt(max(a, b))) steps: binomial tails of 10^5 items need ~10^3
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularised incomplete beta function, for a, b > 0 (Student's t here, binomial tails in
    `binomial`)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    x = df / (df + t * t)
    tail = 0.5 * betainc(df / 2.0, 0.5, x)
    return 1.0 - tail if t > 0 else tail


def t_ppf(p: float, df: float) -> float:
    """Quantile of Student's t by bisection on the CDF (accurate to ~1e-10; called a few times per fit)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_ppf needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p == 0.5:
        return 0.0
    lo, hi = -1.0, 1.0
    while t_cdf(lo, df) > p:
        lo *= 2.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class LineFit:
    """Ordinary least squares y = intercept + slope * x, with a t interval for the slope."""

    n: int
    intercept: float
    slope: float
    slope_se: float
    slope_lo: float
    slope_hi: float
    r2: float


def fit_line(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> LineFit:
    """OLS line; the slope interval is slope +- t_{(1+level)/2, n-2} * se (NaN with fewer than 3 points)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    if n < 2 or np.ptp(x) == 0:
        return LineFit(n, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    slope = float(((x - xm) * (y - ym)).sum() / sxx)
    intercept = float(ym - slope * xm)
    resid = y - intercept - slope * x
    sst = float(((y - ym) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / sst if sst > 0 else math.nan
    if n < 3:
        return LineFit(n, intercept, slope, math.nan, math.nan, math.nan, r2)
    se = math.sqrt(float((resid**2).sum()) / (n - 2) / sxx)
    half = t_ppf(0.5 + level / 2.0, n - 2) * se
    return LineFit(n, intercept, slope, se, slope - half, slope + half, r2)
