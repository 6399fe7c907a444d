"""Quantile rules: textbook order statistic (= MAPIE 1.6), ye2024 (= np.quantile method='higher'), too-few errors."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpbench.results.conformal.quantile import conformal_quantile, min_calibration_size, order_statistic
from cpbench.base.errors import CpbenchError

ALPHAS = [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 50_000), alpha=st.sampled_from(ALPHAS))
def test_textbook_k_is_exact_ceiling(n, alpha):
    k = math.ceil((n + 1) * (1 - Fraction(str(alpha))))
    if k > n:
        with pytest.raises(CpbenchError, match="too few"):
            order_statistic(n, alpha, "textbook")
    else:
        assert order_statistic(n, alpha, "textbook") == k


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 3000), alpha=st.sampled_from(ALPHAS), seed=st.integers(0, 2**32 - 1))
def test_ye2024_rule_is_numpy_higher_quantile(n, alpha, seed):
    scores = np.random.default_rng(seed).random(n).astype(np.float32)
    k = math.ceil((n + 1) * (1 - Fraction(str(alpha))))
    if k > n:
        with pytest.raises(CpbenchError):
            conformal_quantile(scores, alpha, "ye2024")
        return
    expected = np.quantile(scores, np.ceil((n + 1) * (1 - alpha)) / n, method="higher")
    got = conformal_quantile(scores, alpha, "ye2024")
    assert got == expected and got.dtype == np.float32
    # one order statistic above textbook unless textbook is already the maximum
    assert order_statistic(n, alpha, "ye2024") == (k + 1 if k < n else n)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(10, 2000), alpha=st.sampled_from([0.05, 0.1, 0.2]), seed=st.integers(0, 2**32 - 1))
def test_textbook_equals_mapie_quantile(n, alpha, seed):
    from mapie.utils import _compute_classification_quantile

    scores = np.random.default_rng(seed).random(n)
    if math.ceil((n + 1) * (1 - Fraction(str(alpha)))) > n:
        return
    mapie_q = _compute_classification_quantile(scores.reshape(-1, 1), np.array([alpha]))[0]
    assert conformal_quantile(scores, alpha, "textbook") == mapie_q


def test_textbook_picks_kth_smallest_by_hand():
    # n = 19, alpha = 0.1: k = ceil(20 * 0.9) = 18 -> 18th smallest; ye2024: 19th (the max)
    scores = np.arange(1, 20, dtype=np.float64)[::-1].copy()
    assert conformal_quantile(scores, 0.1, "textbook") == 18.0
    assert conformal_quantile(scores, 0.1, "ye2024") == 19.0
    # n = 9, alpha = 0.1: k = ceil(10 * 0.9) = 9 = n -> both pick the max
    assert conformal_quantile(np.arange(9.0), 0.1, "textbook") == 8.0
    assert conformal_quantile(np.arange(9.0), 0.1, "ye2024") == 8.0


@pytest.mark.parametrize("alpha", ALPHAS)
def test_min_calibration_size_is_the_boundary(alpha):
    m = min_calibration_size(alpha)
    assert m == math.ceil((1 - Fraction(str(alpha))) / Fraction(str(alpha)))
    order_statistic(m, alpha)
    if m > 1:
        with pytest.raises(CpbenchError, match=f"need at least {m}"):
            order_statistic(m - 1, alpha)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_alpha_outside_unit_interval(alpha):
    with pytest.raises(CpbenchError, match="alpha must be in"):
        order_statistic(100, alpha)


def test_other_errors():
    with pytest.raises(CpbenchError, match="empty calibration"):
        order_statistic(0, 0.1)
    with pytest.raises(CpbenchError, match="unknown quantile rule"):
        order_statistic(100, 0.1, "median")
    with pytest.raises(CpbenchError, match="1-D"):
        conformal_quantile(np.zeros((3, 3)), 0.1)
