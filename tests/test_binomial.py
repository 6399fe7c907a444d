"""Shares of all items (flip rates, agreement) are decided on the exact binomial: the gate at the limit never passes
more than its level, at every count, where Wilson's score bound reached 5.9 % at n = 1,000."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cpbench.results.analysis import binomial as Bn
from cpbench.results.analysis.bootstrap import paired_draws
from cpbench.results.analysis.estimate import wilson
from cpbench.results.analysis.item_views import item_view
from cpbench.results.analysis.paired import estimates
from cpbench.results.artifact import LogitsArtifact


def _pmf(n: int, theta: float) -> np.ndarray:
    return np.array([math.comb(n, k) * theta**k * (1 - theta) ** (n - k) for k in range(n + 1)])


@pytest.mark.parametrize("n", [1, 7, 40, 150])
def test_tails_and_bounds_are_exact(n: int) -> None:
    for theta in (0.003, 0.05, 0.3, 0.5, 0.91):
        pmf = _pmf(n, theta)
        for k in range(n + 1):
            assert Bn.cdf(k, n, theta) == pytest.approx(pmf[: k + 1].sum(), abs=1e-10)
            assert Bn.sf(k, n, theta) == pytest.approx(pmf[k:].sum(), abs=1e-10)
    for k in range(n + 1):
        u, lo = Bn.upper(k, n, 0.95), Bn.lower(k, n, 0.95)
        assert lo <= k / n <= u
        if k < n:  # the upper bound is the theta at which seeing k or fewer has probability 5 %
            assert Bn.cdf(k, n, u) == pytest.approx(0.05, abs=1e-9)
        if k > 0:
            assert Bn.sf(k, n, lo) == pytest.approx(0.05, abs=1e-9)


def test_large_counts_stay_exact() -> None:
    # normal approximation as a sanity check where it is accurate: n = 100,000, theta = 0.3
    n, theta = 100_000, 0.3
    sd = math.sqrt(n * theta * (1 - theta))
    assert Bn.cdf(int(n * theta + 2 * sd), n, theta) == pytest.approx(0.9772, abs=2e-3)
    assert Bn.upper(30_000, n, 0.975) == pytest.approx(0.3 + 1.96 * math.sqrt(0.21 / n), abs=2e-4)


def _flip_estimate(k: int, n: int):
    """The flip-rate estimate cpbench computes for two models whose base is right on every item and whose candidate
    is wrong on exactly k of n."""
    labels = np.zeros(n, dtype=np.int64)
    lb = np.tile(np.array([3.0, 0, 0, 0, 0, 0], np.float32), (n, 1))
    lc = lb.copy()
    lc[:k] = [0, 3.0, 0, 0, 0, 0]
    ids = [f"i{j:04d}" for j in range(n)]
    vb, vc = (item_view(LogitsArtifact(ids, labels, x, list("ABCDEF"))) for x in (lb, lc))
    return estimates(paired_draws(vb, vc, ("lac",), n_boot=100, seed=0))["flip_cw"]


def test_flip_rate_gate_at_the_limit_never_passes_more_than_its_level() -> None:
    """Pass = the flip rate shown below the limit (one-sided p <= 0.05). At a true rate equal to the limit the pass
    rate, summed exactly over the binomial counts, stays at or below 5 % at every limit; Wilson's went above."""
    n = 300
    est = {k: _flip_estimate(k, n) for k in range(0, 61)}
    assert est[12].method == "binomial" and est[12].point == pytest.approx(0.04)
    worst, worst_wilson = 0.0, 0.0
    for limit in np.linspace(0.01, 0.15, 57):
        pmf = _pmf(n, limit)
        passes = [k for k in est if est[k].p_below(limit) <= 0.05]
        worst = max(worst, float(pmf[passes].sum()))
        wil = [k for k in range(n + 1) if wilson(k / n, n, 1.6448536)[1] < limit]
        worst_wilson = max(worst_wilson, float(pmf[wil].sum()))
    assert worst <= 0.05 + 1e-12
    assert worst_wilson > 0.055  # the score bound this replaces (the test's reason to exist)
    # bounds and tests agree: the one-sided upper bound is where the p-value crosses 5 %
    e = est[20]
    u = e.bound("upper", 0.95)
    assert e.p_below(u + 1e-6) <= 0.05 < e.p_below(u - 1e-6)
    assert e.lo <= e.point <= e.hi and 0.0 <= e.lo and e.hi <= 1.0
    with pytest.raises(ValueError, match="no negated estimate"):
        e.negated()


def test_small_tails_keep_their_relative_accuracy() -> None:
    # 1 - cdf would return 0 (or rounding noise) below 1e-16; the tail is computed from its own side
    for k, n, theta in [(50, 100, 0.01), (30, 1000, 0.001), (9, 10, 0.02)]:
        exact = sum(math.comb(n, j) * theta**j * (1 - theta) ** (n - j) for j in range(k, n + 1))
        assert Bn.sf(k, n, theta) == pytest.approx(exact, rel=1e-9)
    assert Bn.sf(0, 10, 0.3) == 1.0 and Bn.sf(11, 10, 0.3) == 0.0 and Bn.sf(3, 10, 0.0) == 0.0


def test_items_to_decide_for_a_count_uses_the_exact_test() -> None:
    """0 flips of 100 against a limit of 0.01: the count stays 0 and the exact test passes once P(X = 0 | 0.01) <=
    0.05, at ceil(ln 0.05 / ln 0.99) = 299 items (the normal formula with the sample's se of 0 would say 100)."""
    e = _flip_estimate(0, 100)
    assert e.method == "binomial"
    need = e.items_to_decide(0.01, 0.95)
    assert need == 299
    assert Bn.cdf(0, need, 0.01) <= 0.05 < Bn.cdf(0, need - 1, 0.01)
    # a nonzero rate: the planning figure is within 20 % of the smallest n with 80 % exact power (-18 % to +13 %
    # over a grid of rates and limits)
    f, limit = 0.02, 0.05
    plan = _flip_estimate(2, 100).items_to_decide(limit, 0.95)
    assert _flip_estimate(2, 100).point == pytest.approx(f)

    def power(n: int) -> float:
        pmf = _pmf(n, f)
        return float(sum(pmf[k] for k in range(n + 1) if Bn.cdf(k, n, limit) <= 0.05))

    first = next(n for n in range(50, 2000, 5) if power(n) >= 0.8)
    assert abs(plan - first) / first < 0.2, (plan, first)
    # a share with no count to read: not a number of items
    assert math.isnan(_flip_estimate(0, 100).replace(n=0).items_to_decide(0.01, 0.95))


def test_items_to_decide_is_never_below_what_a_count_can_show() -> None:
    # 1 flip of 2,000 against 0.05: the formula alone says 58, but no count passes below ln 0.05 / ln 0.95 = 58.4
    e = _flip_estimate(1, 2000)
    assert e.items_to_decide(0.05, 0.95) >= 59
    assert Bn.cdf(0, 58, 0.05) > 0.05 >= Bn.cdf(0, 59, 0.05)
    # a limit of 0 is decided (beyond) by one flip: 80 % chance to see one at f = 0.01 after 161 items
    assert _flip_estimate(1, 100).items_to_decide(0.0, 0.95) == math.ceil(math.log(0.2) / math.log(0.99))
