"""A point estimate with its standard errors and how its interval and one-sided tests are formed (`Estimate`), and
Wilson's score interval (numpy only).

A share of all items (flips, agreement) is a binomial count and gets the exact (Clopper-Pearson) interval and tests
(`binomial`); a set-based share (churn, newly confidently wrong) a Wilson score interval at the bootstrap's effective
sample size (p(1 - p) / se^2), which keeps its coverage near nominal at small n and small p where a normal interval
does not; set-based diagnostics (churn, newly confidently wrong, Jaccard) also reach the bootstrap percentile ends,
since they jump or saturate with q-hat's position. Which metric gets which method: `paired.estimates`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Literal

import numpy as np

from cpbench.results.analysis import binomial

LEVEL = 0.95
_NORMAL = NormalDist()


def z_of(level_one_sided: float) -> float:
    return _NORMAL.inv_cdf(level_one_sided)


Method = Literal["normal", "wilson", "binomial", "paired", "tilted", "lognormal"]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its standard errors and how its interval is formed.

    `se_item` is the item-sampling part (paired bootstrap, never below the floor noted in `note`), `se_split` the split
    Monte Carlo part (spread of the S per-split paired values / sqrt(S)); `se` combines them. `split_lo`/`split_hi`
    keep the split-to-split 95% percentile range, labelled as what it is (it does not cover item sampling).
    `lo_limit`/`hi_limit` are the range the quantity can take (a bounded metric's bounds are kept inside it)."""

    metric: str
    point: float
    se: float
    se_item: float = math.nan
    se_split: float = 0.0
    n: int = 0
    method: Method = "normal"
    level: float = LEVEL
    note: str = ""
    split_lo: float = math.nan
    split_hi: float = math.nan
    lo_limit: float = -math.inf
    hi_limit: float = math.inf
    # item-level bootstrap replicates of the estimate (rows 1..B of the shared bootstrap counts): comparisons of the
    # same items resample them identically, so replicates of several models' deltas give their joint distribution
    reps: np.ndarray | None = field(default=None, compare=False, repr=False)
    cap_n_eff: bool = True  # Wilson: effective sample size at most n
    # method "paired" (a difference of paired proportions, e.g. accuracy): (share of items the candidate gains, share
    # it loses); tests and bounds use the score statistic with the variance under the null (Tango 1998)
    discordant: tuple[float, float] | None = None
    # method "tilted": the items' own differences at the full-sample quantiles, as (distinct values, counts); tests and
    # bounds scale the item-level variance by the per-item variance under the null (these values exponentially
    # tilted to mean delta, as empirical likelihood does) over their sample variance: a variance function of delta,
    # which keeps the one-sided level where the sample's own spread is smallest exactly when its estimate is furthest
    # from the truth (a score-type test, like Wilson's for a proportion)
    item_d: tuple[np.ndarray, np.ndarray] | None = field(default=None, compare=False, repr=False)
    # a set-based item-by-item proportion (set churn, newly confidently wrong): its bounds also reach the bootstrap
    # replicates' percentile bounds (`reps`, q-hat recomputed in every replicate). The plug-in jumps when q-hat moves
    # past an atom of tied true-label scores (real bf16 logits: one pair's candidate APS quantile sits on 178 scores
    # of exactly 1.0, and a sample whose q-hat falls below them shows 2-5 items with unchanged sets where the
    # population shows 0.4 %); a Wilson interval from the replicates' se assumes a smooth binomial count and misses
    # the jump, the replicates themselves show it (docs/conformal.md, "Set churn on an atom of tied scores"). Also set
    # Jaccard (normal interval with its floor): a monotone, saturating function of q-hat's position, skewed where the
    # normal interval is symmetric (`paired.estimates`).
    boot_hull: bool = False
    # method "wilson", the candidate's own coverage: each bound the farther of Wilson's and the normal (Wald) one. The
    # coverage estimate's variance falls toward 1 more slowly than p(1 - p) (real A, APS, n = 300: effective sample
    # size p(1 - p) / se^2 287 in the lowest fifth of estimates, 120 in the highest), so Wilson's end toward 1 is too
    # close (its upper end missed in 7-8 % of samples) while a normal interval's end away from 1 misses where the
    # highest estimates show the smallest spread; a variance function between the two models (constant, binomial)
    # keeps both ends (docs/conformal.md, "... the candidate's coverage near 1")
    wald_hull: bool = False

    def negated(self, metric: str | None = None) -> "Estimate":
        """The estimate of minus the quantity (e.g. an accuracy drop from an accuracy difference)."""
        if self.method == "binomial":  # its bounds and tests read the point as a count k / n of items
            raise ValueError(f"{self.metric}: a share of items (exact binomial) has no negated estimate")
        return self.replace(metric=metric or self.metric, point=-self.point, split_lo=-self.split_hi,
                            split_hi=-self.split_lo, lo_limit=-self.hi_limit, hi_limit=-self.lo_limit,
                            reps=None if self.reps is None else -self.reps,
                            item_d=None if self.item_d is None else (-self.item_d[0], self.item_d[1]),
                            discordant=None if self.discordant is None else self.discordant[::-1])

    def _null_sd(self, delta: float) -> float:
        """sd of the estimate if the true difference were `delta` (Tango's restricted maximum likelihood for paired
        proportions: P(gain) = q + delta, P(loss) = q), plus the split term."""
        gain, loss = self.discordant
        n = float(self.n)
        if delta < 0:
            gain, loss, delta = loss, gain, -delta
        x, y = gain * n, loss * n
        m = n - x - y
        b = x * (1 - delta) + y * (1 - 3 * delta) - 2 * m * delta
        q = (b + math.sqrt(max(b * b + 8 * n * y * delta * (1 - delta), 0.0))) / (4 * n)
        var = max(2 * q + delta - delta * delta, 0.0) / n
        return math.sqrt(var + self.se_split**2)

    def _tilted_sd(self, delta: float) -> float:
        # beyond 4 se from the estimate the variance is held at its value there, so the statistic keeps growing and
        # every bound is finite (a far delta would otherwise carry a variance growing like delta^2 when the items'
        # own differences explain little of the se, and the test could never reject it)
        reach = 4.0 * self.se
        delta = min(max(delta, self.point - reach), self.point + reach)
        vals, cnt = self.item_d
        tot = float(cnt.sum())
        p = [float(c) / tot for c in cnt]
        v = [float(x) for x in vals]
        mean = sum(pi * vi for pi, vi in zip(p, v))
        v0 = sum(pi * (vi - mean) ** 2 for pi, vi in zip(p, v))
        x = [vi - (mean - float(self.point)) - delta for vi in v]  # values centred on the point, minus delta
        if v0 <= 0:
            vt = v0
        elif not (min(x) < 0 < max(x)):
            vt = sum(pi * xi * xi for pi, xi in zip(p, x))  # no tilt reaches delta: the second moment about it
        else:
            lo_l, hi_l = -1.0 / max(x) + 1e-12, -1.0 / min(x) - 1e-12
            lam = 0.0
            for _ in range(100):  # sum p x / (1 + lam x) = 0: safeguarded Newton (g decreases in lam)
                g = sum(pi * xi / (1 + lam * xi) for pi, xi in zip(p, x))
                if abs(g) < 1e-13:
                    break
                if g > 0:
                    lo_l = lam
                else:
                    hi_l = lam
                dg = -sum(pi * xi * xi / (1 + lam * xi) ** 2 for pi, xi in zip(p, x))
                step = lam - g / dg if dg < 0 else 0.5 * (lo_l + hi_l)
                lam = step if lo_l < step < hi_l else 0.5 * (lo_l + hi_l)
            w = [pi / (1.0 + lam * xi) for pi, xi in zip(p, x)]
            sw = sum(w)
            vt = sum(wi * xi * xi for wi, xi in zip(w, x)) / sw
        # the item-level variance scales with the per-item variance under the null (the quantile's part moves with
        # it: a sample whose sets came out small shows a small spread of both)
        ratio = vt / v0 if v0 > 0 else 1.0
        return math.sqrt(self.se_item**2 * max(ratio, 0.0) + self.se_split**2)

    def _paired_bound(self, side: str, z: float) -> float:
        """The delta at which the score statistic (point - delta) / sd(delta) equals z (lower) or -z (upper)."""
        lo, hi = (self.lo_limit if math.isfinite(self.lo_limit) else -1.0), self.point
        if side == "upper":
            lo, hi = self.point, (self.hi_limit if math.isfinite(self.hi_limit) else 1.0)
        sdf = self._null_sd if self.method == "paired" else self._tilted_sd
        f = (lambda d: (self.point - d) / max(sdf(d), 1e-15) - z) if side == "lower" else (
            lambda d: (self.point - d) / max(sdf(d), 1e-15) + z)
        if side == "lower" and f(lo) <= 0:
            return lo
        if side == "upper" and f(hi) >= 0:
            return hi
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if f(mid) > 0:  # f decreases in delta on both sides
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)
    @property
    def ok(self) -> bool:
        return math.isfinite(self.point) and math.isfinite(self.se)

    def _count(self) -> tuple[int, int]:
        """(k, n) of a share of all items: the point is k / n."""
        n = int(self.n)
        k = round(self.point * n)
        if abs(self.point * n - k) > 1e-6 * max(n, 1):
            raise ValueError(f"{self.metric}: {self.point!r} is not a count of {n} items")
        return min(max(k, 0), n), n

    def _n_eff(self) -> float:
        p = min(max(self.point, 0.0), 1.0)
        if self.se > 0 and 0 < p < 1:
            return min(float(self.n), p * (1 - p) / self.se**2) if self.n and self.cap_n_eff else p * (
                1 - p) / self.se**2
        return float(self.n or 1)

    def bound(self, side: Literal["lower", "upper"], level_one_sided: float) -> float:
        """One-sided confidence bound at `level_one_sided`, inside [lo_limit, hi_limit] (and never on the wrong side
        of the point estimate)."""
        if not self.ok or (self.method == "binomial" and self.n <= 0):
            return math.nan
        z = z_of(level_one_sided)
        if self.method == "binomial":  # a count of items: Clopper-Pearson, exact
            k, n = self._count()
            b = binomial.lower(k, n, level_one_sided) if side == "lower" else binomial.upper(k, n, level_one_sided)
        elif self.method == "wilson":
            lo, hi = wilson(self.point, self._n_eff(), z)
            if self.wald_hull:
                lo, hi = min(lo, self.point - z * self.se), max(hi, self.point + z * self.se)
            b = lo if side == "lower" else hi
        elif self.method == "paired" and self.discordant is not None and self.n > 0:
            b = self._paired_bound(side, z)
        elif self.method == "lognormal" and self.point > 0:
            r = math.exp(z * self.se / self.point)
            b = self.point / r if side == "lower" else self.point * r
        elif self.method == "tilted" and self.item_d is not None:
            lim = (self.point - 20 * self.se - 1, self.point + 20 * self.se + 1)
            b = self.replace(lo_limit=max(self.lo_limit, lim[0]), hi_limit=min(self.hi_limit, lim[1]))._paired_bound(
                side, z)
        else:
            b = self.point - z * self.se if side == "lower" else self.point + z * self.se
        if self.boot_hull and self.reps is not None and len(self.reps):
            q = _replicate_bound(self.reps, side, level_one_sided)
            b = min(b, q) if side == "lower" else max(b, q)
        b = min(max(b, self.lo_limit), self.hi_limit)
        return min(b, self.point) if side == "lower" else max(b, self.point)

    @property
    def lo(self) -> float:
        return self.bound("lower", 0.5 + self.level / 2)

    @property
    def hi(self) -> float:
        return self.bound("upper", 0.5 + self.level / 2)

    def p_below(self, margin: float) -> float:
        """One-sided p-value for H0: theta >= margin (small when the estimate is clearly below the margin)."""
        if not self.ok or (self.method == "binomial" and self.n <= 0):
            return math.nan
        if self.method == "binomial":  # the exact tail at the margin (the null's nearest point)
            return binomial.cdf(*self._count(), margin)
        if self.method == "wilson":
            m = min(max(margin, 1e-12), 1 - 1e-12)
            sd = math.sqrt(m * (1 - m) / self._n_eff())
        elif self.method == "paired" and self.discordant is not None and self.n > 0:
            sd = self._null_sd(min(max(margin, -1.0 + 1e-12), 1.0 - 1e-12))
        elif self.method == "tilted" and self.item_d is not None:
            sd = self._tilted_sd(margin)
        elif self.method == "lognormal" and self.point > 0:
            if margin <= 0:
                return 1.0
            return _NORMAL.cdf((math.log(self.point) - math.log(margin)) / (self.se / self.point))
        else:
            sd = self.se
        if sd <= 0:
            p = 0.0 if self.point < margin else 1.0
        else:
            p = _NORMAL.cdf((self.point - margin) / sd)
        if self.boot_hull and self.reps is not None and len(self.reps):
            p = max(p, float(np.mean(self.reps >= margin)))  # as the upper bound: the replicates' own share
        if self.wald_hull and self.method == "wilson" and self.se > 0:
            p = max(p, _NORMAL.cdf((self.point - margin) / self.se))  # as the upper bound: Wilson's or Wald's
        return p

    def p_above(self, margin: float) -> float:
        """One-sided p-value for H0: theta <= margin."""
        if self.method == "binomial":
            if not self.ok or self.n <= 0:
                return math.nan
            k, n = self._count()
            return binomial.sf(k, n, margin)
        if self.boot_hull and self.reps is not None and len(self.reps) and self.ok:
            return max(self.replace(boot_hull=False).p_above(margin), float(np.mean(self.reps <= margin)))
        if self.wald_hull and self.method == "wilson" and self.ok and self.se > 0:
            return max(self.replace(wald_hull=False).p_above(margin), _NORMAL.cdf((margin - self.point) / self.se))
        p = self.p_below(margin)
        return p if math.isnan(p) else 1.0 - p

    def items_to_decide(self, margin: float, level_one_sided: float, power: float = 0.8) -> float:
        """Items (in all) that would decide against `margin` with probability `power` if the estimate is the truth,
        from this cell's own per-item variance: n * ((z_level + z_power) * se / |estimate - margin|)^2 (se * sqrt(n)
        is the per-item standard deviation; both the item and the split terms shrink as 1 / sqrt(n))."""
        gap = abs(self.point - margin)
        if not self.ok or self.n <= 0:
            return math.nan
        if self.method == "binomial":
            return _binomial_items(self.point, margin, level_one_sided, power)
        if gap == 0 or self.se == 0:
            return math.inf if gap == 0 else float(self.n)
        return float(self.n) * ((z_of(level_one_sided) + z_of(power)) * self.se / gap) ** 2

    def replace(self, **kw) -> "Estimate":
        from dataclasses import replace as _replace

        return _replace(self, **kw)


def wilson(p: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval for a proportion p from n (possibly effective, non-integer) trials."""
    p = min(max(p, 0.0), 1.0)
    n = max(n, 1e-9)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _replicate_bound(reps: np.ndarray, side: str, level_one_sided: float) -> float:
    """The bootstrap replicates' one-sided bound that agrees with their share as a p-value (`p_below`, `p_above`):
    the (floor((1 - level) B) + 1)-th largest replicate (upper) or smallest (lower), so every margin beyond it has at
    most (1 - level) B replicates at or beyond it, and every margin inside it more (an interpolated quantile can sit
    inside the order statistic and disagree with the share at B = 300)."""
    srt = np.sort(np.asarray(reps, dtype=float))
    j = min(int(math.floor((1.0 - level_one_sided) * len(srt) + 1e-9)), len(srt) - 1)
    return float(srt[-1 - j] if side == "upper" else srt[j])


def _binomial_items(f: float, margin: float, level_one_sided: float, power: float) -> float:
    """Items a count needs for the exact test against `margin` to decide with probability about `power` if the share
    is f: the variance under the null at the margin and under f (the test's own), n = ((z_level sqrt(L(1 - L)) +
    z_power sqrt(f(1 - f))) / |L - f|)^2, and never fewer than a count of 0 (or n) needs to pass: P(X = 0 | L) <=
    1 - level, n = ln(1 - level) / ln(1 - L). A planning figure: exact power is not monotone in n (the formula is
    within -18 % to +13 % of the first n with 80 % exact power). A margin of 0 or 1 is decided by one item on the
    other side: ln(1 - power) / ln(1 - |f - L|)."""
    gap = abs(f - margin)
    if gap == 0:
        return math.inf
    if not 0.0 < margin < 1.0:
        return 1.0 if gap >= 1.0 else math.ceil(math.log(1.0 - power) / math.log(1.0 - gap))
    below = f < margin  # shown below the margin, the fewest items when no item counts; above it, when all do
    floor = math.ceil(math.log(1.0 - level_one_sided) / math.log(1.0 - (margin if below else 1.0 - margin)))
    if f <= 0.0 or f >= 1.0:
        return floor
    za, zb = z_of(level_one_sided), z_of(power)
    return max(((za * math.sqrt(margin * (1 - margin)) + zb * math.sqrt(f * (1 - f))) / gap) ** 2, floor)
