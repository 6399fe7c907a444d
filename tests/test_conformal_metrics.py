"""Accuracy and calibration measures per split against direct computations on each split's test part."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpbench.results.conformal import random_splits
from cpbench.results.conformal.metrics import per_split_base, ratio_map, summary, uacc


def reference(logits, y, letters, test):
    lg, yy = logits[test].astype(np.float64), y[test]
    from scipy.special import log_softmax
    from scipy.stats import entropy
    from sklearn.metrics import log_loss

    logp = log_softmax(lg, axis=1)
    p = np.exp(logp)
    top = lg.argmax(axis=1)
    correct = top == yy
    conf = p[np.arange(len(yy)), top]
    ece = 0.0
    for b in range(15):  # bins (b/15, (b+1)/15], the first one closed at 0
        lo, hi = b / 15, (b + 1) / 15
        m = (conf > lo) & (conf <= hi) if b else (conf <= hi)
        if m.any():
            ece += m.sum() / len(yy) * abs(conf[m].mean() - correct[m].mean())
    onehot = np.eye(lg.shape[1])[yy]
    return {
        "acc": correct.mean(),
        "ece": ece,
        "brier": ((p - onehot) ** 2).sum(axis=1).mean(),
        "nll": log_loss(yy, p, labels=np.arange(lg.shape[1])),
        "entropy": entropy(p, axis=1).mean(),
        "idk_rate": (top == letters.index("E")).mean() if "E" in letters else None,
        "nota_rate": (top == letters.index("F")).mean() if "F" in letters else None,
    }


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(2, 7), scale=st.sampled_from([0.5, 2.0, 6.0]))
def test_per_split_metrics_match_direct_computation(seed, k, scale):
    rng = np.random.default_rng(seed)
    n = 300
    logits = (rng.normal(size=(n, k)) * scale).astype(np.float32)
    y = rng.integers(0, k, n)
    letters = [chr(65 + j) for j in range(k)]
    is_cal = random_splits(n, 7, seed)
    got = per_split_base(is_cal, logits, y, letters, chunk=3)
    for r in range(7):
        ref = reference(logits, y, letters, ~is_cal[r])
        for key, value in ref.items():
            if value is None:
                assert got[key] is None
            else:
                assert got[key][r] == pytest.approx(value, abs=1e-8), (key, r)


def test_nll_is_capped_like_sklearn():
    logits = np.array([[0.0, 200.0], [200.0, 0.0]], dtype=np.float32)
    y = np.array([0, 0])
    got = per_split_base(np.array([[False, True]]), logits, y, ["A", "B"], chunk=1)
    assert got["nll"][0] == pytest.approx(-math.log(np.finfo(np.float64).eps))


def test_summary_and_helpers():
    mean, std, ci = summary(np.array([1.0, 2.0, 3.0, 4.0]))
    assert mean == 2.5 and std == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert ci == pytest.approx(list(np.percentile([1, 2, 3, 4], [2.5, 97.5])))
    assert summary(np.array([0.7])) == (0.7, None, None)
    assert ratio_map(np.array([1, 0]), np.array([2, 0]), ["a", "b"]) == {"a": 0.5, "b": None}
    np.testing.assert_allclose(uacc(np.array([0.5, 0.5]), np.array([2.0, 0.0]), 6), [0.5 * math.sqrt(6) / 2, 0.0])
