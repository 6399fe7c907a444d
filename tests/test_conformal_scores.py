"""Score functions against brute-force references written from the definitions, item by item, in plain Python."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpbench.results.conformal import SplitConformal, build, softmax
from cpbench.results.conformal.scores import aps, lac
from cpbench.base.errors import CpbenchError


def dirichlet_data(seed: int, n: int, k: int, conc: float = 1.0):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(k, conc), n)
    y = np.array([rng.choice(k, p=row) for row in p])
    return p, y


def exact_k(n: int, alpha: float) -> int:
    return math.ceil((n + 1) * (1 - Fraction(str(alpha))))


def ranked(row) -> list[int]:
    """Options by descending probability, ties by option index (the default protocol's order)."""
    return sorted(range(len(row)), key=lambda j: (-row[j], j))


def brute_aps_score(row, y, k_reg=0, lam=0.0) -> float:
    total = 0.0
    for r, j in enumerate(ranked(row), start=1):
        total += float(row[j])
        if j == y:
            return total + lam * max(0, r - k_reg)
    raise AssertionError


def brute_aps_set(row, qhat, k_reg=0, lam=0.0) -> set[int]:
    """Add options in descending order; stop after the one whose running score exceeds qhat (it is included)."""
    out, total = set(), 0.0
    for r, j in enumerate(ranked(row), start=1):
        out.add(j)
        total += float(row[j])
        if total + lam * max(0, r - k_reg) > qhat:
            break
    return out


def brute_qhat(scores, alpha) -> float:
    return sorted(scores)[exact_k(len(scores), alpha) - 1]


def as_sets(mask: np.ndarray) -> list[set[int]]:
    return [set(np.flatnonzero(row).tolist()) for row in mask]


def test_softmax_matches_scipy_and_keeps_dtype():
    from scipy.special import softmax as sp_softmax

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(50, 6)) * 5).astype(np.float32)
    p64 = softmax(x)
    assert p64.dtype == np.float64
    np.testing.assert_allclose(p64, sp_softmax(x.astype(np.float64), axis=1), rtol=1e-12, atol=1e-15)
    p32 = softmax(x, np.float32)
    assert p32.dtype == np.float32
    np.testing.assert_allclose(p32, p64, rtol=1e-5, atol=1e-7)
    # huge logits: no overflow
    assert np.isfinite(softmax(np.array([[1e30, 0.0, -1e30]], dtype=np.float32))).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(2, 7), alpha=st.sampled_from([0.05, 0.1, 0.2, 0.3]))
def test_lac_sets_match_definition(seed, k, alpha):
    p, y = dirichlet_data(seed, 120, k)
    cal, test = slice(0, 60), slice(60, None)
    qhat = brute_qhat([1 - p[i, y[i]] for i in range(60)], alpha)
    cp = SplitConformal("lac", alpha).fit(p[cal], y[cal])
    assert cp.qhat_ == qhat
    expected = [{j for j in range(k) if 1 - p[i, j] <= qhat} for i in range(60, 120)]
    assert as_sets(cp.predict_set(p[test])) == expected


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(2, 7),
    alpha=st.sampled_from([0.05, 0.1, 0.2]),
    raps_params=st.sampled_from([(0, 0.0), (1, 0.1), (2, 0.05)]),
)
def test_aps_and_raps_match_brute_force(seed, k, alpha, raps_params):
    k_reg, lam = raps_params
    p, y = dirichlet_data(seed, 120, k, conc=0.7)
    name = "raps" if lam else "aps"
    cal_scores = [brute_aps_score(p[i], y[i], k_reg, lam) for i in range(60)]
    table = build(name, p[:60], k_reg=k_reg, lam=lam)
    np.testing.assert_allclose(table.cal_scores(y[:60]), cal_scores, rtol=0, atol=1e-12)
    qhat = brute_qhat(cal_scores, alpha)
    cp = SplitConformal(name, alpha, k_reg=k_reg, lam=lam).fit(p[:60], y[:60])
    assert cp.qhat_ == pytest.approx(qhat, abs=1e-12)
    got = as_sets(cp.predict_set(p[60:]))
    expected = [brute_aps_set(p[i], cp.qhat_, k_reg, lam) for i in range(60, 120)]
    assert got == expected
    assert all(len(s) >= 1 for s in got)  # the crossing option is always included: never empty


def test_randomized_aps_matches_definition():
    p, y = dirichlet_data(3, 200, 5)
    rng = np.random.default_rng(1)
    u = rng.random(200)
    table = build("aps_rand", p, u=u)
    for i in range(200):
        order = ranked(p[i])
        for j in range(5):
            mass = sum(p[i, o] for o in order[: order.index(j) + 1])
            assert table.score[i, j] == pytest.approx(mass - u[i] * p[i, j], abs=1e-12)
    for qhat in (0.1, 0.8):
        sets = table.members(qhat, "allow")
        assert (sets == (table.score <= qhat)).all()
    assert (~table.members(0.1, "allow").any(axis=1)).any()  # randomised sets can be empty


def test_default_tie_order_is_option_index():
    p = np.array([[0.2, 0.3, 0.3, 0.2]])
    t = aps(p)
    # ranks: B (1), C (2), A (3), D (4): cumulative 0.3, 0.6, 0.8, 1.0
    np.testing.assert_allclose(t.score[0], [0.8, 0.3, 0.6, 1.0])
    np.testing.assert_allclose(t.stat[0], [0.6, 0.0, 0.3, 0.8])
    assert t.top[0] == 1


def test_empty_policy_top1_uses_argmax():
    p = np.array([[0.4, 0.35, 0.25], [0.2, 0.5, 0.3]])
    t = lac(p)
    sets = t.members(0.1, "allow")  # 1 - p <= 0.1 needs p >= 0.9: nothing
    assert not sets.any()
    sets = t.members(0.1, "top1")
    assert as_sets(sets) == [{0}, {1}]
    with pytest.raises(CpbenchError):
        t.members(0.1, "bogus")


def test_score_input_errors():
    with pytest.raises(CpbenchError, match="unknown score"):
        build("nope", np.full((2, 3), 1 / 3))
    with pytest.raises(CpbenchError, match="shape"):
        build("lac", np.ones(3))
    with pytest.raises(CpbenchError, match="NaN"):
        build("lac", np.array([[np.nan, 1.0]]))
    with pytest.raises(CpbenchError, match="uniform"):
        build("aps_rand", np.full((2, 3), 1 / 3))
    with pytest.raises(CpbenchError, match="k_reg"):
        aps(np.full((2, 3), 1 / 3), k_reg=-1, lam=0.1)
