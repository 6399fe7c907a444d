"""Cross-check against MAPIE 1.6 (v1 API) on the same probabilities and split.

MAPIE's classification quantile is `np.quantile(scores, ceil((n+1)(1-alpha))/n, method="lower")`, the textbook
order statistic; its LAC set is {j : (1 - p_j) - qhat <= 1e-8}. So with the textbook rule and empty sets allowed the
sets must be identical (random continuous probabilities put no score within 1e-8 of qhat). MAPIE's APS always
randomises calibration scores (score - u * p_y, u from RandomState(random_state)); our `aps_rand` with the same u
must give the same calibration scores and the same q-hat. Non-randomised APS is checked against a brute force in
test_conformal_scores.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("mapie")
from mapie.classification import SplitConformalClassifier
from sklearn.base import BaseEstimator, ClassifierMixin

from cpbench.results.conformal import SplitConformal, build, conformal_quantile, random_splits


class StoredProbs(ClassifierMixin, BaseEstimator):
    """Prefit classifier whose 'features' are row indices into stored probabilities."""

    def __init__(self, probs=None):
        self.probs = probs

    def fit(self, X=None, y=None):
        self.classes_ = np.arange(self.probs.shape[1])
        return self

    def predict_proba(self, X):
        return self.probs[np.asarray(X)[:, 0].astype(int)]

    def predict(self, X):
        return self.predict_proba(X).argmax(axis=1)


def data(seed, n, k):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(k, 0.8), n)
    y = np.minimum((rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1), k - 1)
    return p, y


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(60, 800),
    k=st.integers(2, 7),
    alpha=st.sampled_from([0.05, 0.1, 0.2, 0.3]),
)
def test_lac_sets_identical_to_mapie(seed, n, k, alpha):
    p, y = data(seed, n, k)
    is_cal = random_splits(n, 1, seed)[0]
    cal, test = np.flatnonzero(is_cal), np.flatnonzero(~is_cal)
    if int(np.ceil((len(cal) + 1) * (1 - alpha))) > len(cal):
        return
    X = np.arange(n)[:, None]
    mapie = SplitConformalClassifier(
        estimator=StoredProbs(p).fit(), confidence_level=1 - alpha, conformity_score="lac", prefit=True
    ).conformalize(X[cal], y[cal])
    _, mapie_sets = mapie.predict_set(X[test])
    ours = SplitConformal("lac", alpha, quantile="textbook", empty="allow").fit(p[cal], y[cal])
    assert ours.qhat_ == mapie._mapie_classifier.conformity_score_function_.quantiles_[0]
    assert np.array_equal(ours.predict_set(p[test]), mapie_sets[:, :, 0])


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(60, 600), k=st.integers(3, 7), state=st.integers(0, 2**31))
def test_randomised_aps_scores_and_quantile_equal_mapie(seed, n, k, state):
    p, y = data(seed, n, k)
    is_cal = random_splits(n, 1, seed)[0]
    cal, test = np.flatnonzero(is_cal), np.flatnonzero(~is_cal)
    X = np.arange(n)[:, None]
    mapie = SplitConformalClassifier(
        estimator=StoredProbs(p).fit(), confidence_level=0.9, conformity_score="aps", prefit=True, random_state=state
    ).conformalize(X[cal], y[cal])
    mapie.predict_set(X[test])  # computes quantiles_
    u = np.random.RandomState(state).uniform(size=len(cal))  # the draw MAPIE makes for its calibration scores
    ours = build("aps_rand", p[cal], u=u).cal_scores(y[cal])
    np.testing.assert_allclose(ours, mapie.conformity_scores.ravel(), rtol=0, atol=1e-12)
    assert conformal_quantile(ours, 0.1) == pytest.approx(
        mapie._mapie_classifier.conformity_score_function_.quantiles_[0], abs=1e-12
    )
