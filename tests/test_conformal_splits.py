"""Splits: the ye2024 single split equals scikit-learn's train_test_split; seeded random splits are pure, sized
right, prefix-stable and (optionally) stratified."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cpbench.results.conformal.splits import canonical_order, random_splits, sklearn_split
from cpbench.base.errors import CpbenchError


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(2, 3000),
    ratio=st.sampled_from([0.5, 0.3, 0.7, 0.25, 0.9]),
    state=st.one_of(st.just(42), st.integers(0, 2**32 - 1)),
)
def test_sklearn_split_identical_to_train_test_split(n, ratio, state):
    from sklearn.model_selection import train_test_split

    if math.floor(ratio * n) == 0:
        with pytest.raises(CpbenchError):
            sklearn_split(n, ratio, state)
        return
    train, test = train_test_split(list(range(n)), train_size=ratio, random_state=state)
    cal_idx, test_idx = sklearn_split(n, ratio, state)
    assert cal_idx.tolist() == train
    assert test_idx.tolist() == test


def test_sklearn_split_known_values():
    # RandomState(42).permutation(6) = [0, 1, 5, 2, 4, 3]: test = first 3, calibration = last 3
    cal_idx, test_idx = sklearn_split(6, 0.5, 42)
    assert cal_idx.tolist() == [2, 4, 3] and test_idx.tolist() == [0, 1, 5]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 400), R=st.integers(1, 20), seed=st.integers(0, 2**31), ratio=st.sampled_from([0.5, 0.2, 0.8]))
def test_random_splits_are_pure_and_sized(n, R, seed, ratio):
    n_cal = math.floor(ratio * n)
    if n_cal < 1 or n_cal == n:
        with pytest.raises(CpbenchError):
            random_splits(n, R, seed, ratio)
        return
    a = random_splits(n, R, seed, ratio)
    assert a.shape == (R, n) and a.dtype == bool
    assert (a.sum(axis=1) == n_cal).all()
    assert (random_splits(n, R, seed, ratio) == a).all()
    longer = random_splits(n, R + 5, seed, ratio)
    assert (longer[:R] == a).all()  # R splits are a prefix of R + 5


def test_random_splits_depend_on_seed_and_cover_items_evenly():
    a = random_splits(200, 400, 0)
    b = random_splits(200, 400, 1)
    assert (a != b).any()
    freq = a.mean(axis=0)  # each item is in calibration about half the time
    assert abs(freq.mean() - 0.5) < 1e-12 and freq.min() > 0.35 and freq.max() < 0.65


def test_stratified_splits_keep_class_counts():
    rng = np.random.default_rng(0)
    labels = rng.choice(6, size=301, p=[0.4, 0.2, 0.15, 0.15, 0.05, 0.05])
    s = random_splits(301, 50, 7, 0.5, labels=labels)
    n_cal = math.floor(0.5 * 301)
    assert (s.sum(axis=1) == n_cal).all()
    per_class = np.stack([s[:, labels == c].sum(axis=1) for c in range(6)], axis=1)
    assert (per_class == per_class[0]).all()  # same count of each class in every split
    counts = np.bincount(labels, minlength=6)
    assert (np.abs(per_class[0] - counts * n_cal / 301) < 1).all()  # proportional (largest remainder)


def test_canonical_order_sorts_ids_as_strings():
    ids = ["b", "a", "10", "2"]
    assert [ids[i] for i in canonical_order(ids)] == ["10", "2", "a", "b"]


def test_split_errors():
    with pytest.raises(CpbenchError, match="empty calibration"):
        random_splits(1, 3, 0)
    with pytest.raises(CpbenchError, match="seed"):
        random_splits(10, 3, -1)
    with pytest.raises(CpbenchError, match="at least one split"):
        random_splits(10, 0, 0)
    with pytest.raises(CpbenchError, match="cal_ratio"):
        random_splits(10, 3, 0, 1.0)
