"""Calibration/test splits.

`random_splits` gives R seeded splits as a boolean matrix is_cal[R, n]. Rows are drawn one after another from one
`numpy.random.default_rng(seed)` stream, so the first R splits of a longer run are the same splits (R = 100 is a prefix
of R = 1000), and splits are a pure function of (n, seed, cal_ratio, stratify, labels when stratified). Callers that
want results independent of row order (the default protocol) put items in a canonical order first
(`canonical_order`, by id).

`sklearn_split` reproduces `sklearn.model_selection.train_test_split(items, train_size=cal_ratio,
random_state=seed)` without importing scikit-learn: ShuffleSplit draws `RandomState(seed).permutation(n)`, takes the
first n_test = n - floor(cal_ratio * n) positions as test and the next floor(cal_ratio * n) as train (our calibration).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from typing import Sequence

import numpy as np

from cpbench.base.errors import CpbenchError


def canonical_order(ids: Sequence[str]) -> np.ndarray:
    """Permutation that sorts items by id (as strings): the order the default protocol's splits are drawn in."""
    keys = [str(i) for i in ids]
    return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)


def calibration_size(n: int, cal_ratio: float) -> int:
    if not (0.0 < cal_ratio < 1.0):
        raise CpbenchError(f"cal_ratio must be in (0, 1), got {cal_ratio}")
    n_cal = math.floor(cal_ratio * n)
    if n_cal < 1:
        raise CpbenchError(f"empty calibration set: {n} items x cal_ratio {cal_ratio:g} rounds down to 0")
    if n - n_cal < 1:
        raise CpbenchError(f"empty test set: {n} items x cal_ratio {cal_ratio:g} leaves no test item")
    return n_cal


def _stratum_quotas(counts: np.ndarray, n_cal: int) -> np.ndarray:
    """Largest-remainder apportionment of n_cal over classes in proportion to their sizes (ties: lower class)."""
    exact = counts * (n_cal / counts.sum())
    quota = np.floor(exact).astype(np.int64)
    rest = n_cal - int(quota.sum())
    if rest:
        frac = exact - quota
        frac[quota >= counts] = -1.0  # a full class cannot take more
        quota[np.argsort(-frac, kind="stable")[:rest]] += 1
    return quota


def random_splits(
    n: int,
    splits: int,
    seed: int,
    cal_ratio: float = 0.5,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """is_cal[R, n]: True where item i is in split r's calibration part. Stratified by label when labels given:
    every split then has the same number of calibration items of each class. Memoised (read-only result): the two
    records of a comparison, and every look of a sequential gate at the same items, draw the same splits."""
    lab = None if labels is None else np.ascontiguousarray(labels)
    key = (int(n), int(splits), int(seed), float(cal_ratio), None if lab is None else (
        lab.dtype.str, hashlib.sha1(lab.tobytes()).hexdigest()))
    if key in _SPLITS:
        _SPLITS.move_to_end(key)
        return _SPLITS[key]
    out = _random_splits(n, splits, seed, cal_ratio, labels)
    out.setflags(write=False)
    _SPLITS[key] = out
    while len(_SPLITS) > 8:
        _SPLITS.popitem(last=False)
    return out


_SPLITS: "OrderedDict[tuple, np.ndarray]" = OrderedDict()


def _random_splits(n: int, splits: int, seed: int, cal_ratio: float, labels: np.ndarray | None) -> np.ndarray:
    if splits < 1:
        raise CpbenchError(f"need at least one split, got {splits}")
    if seed < 0:
        raise CpbenchError(f"seed must be >= 0, got {seed}")
    n_cal = calibration_size(n, cal_ratio)
    rng = np.random.default_rng(seed)
    is_cal = np.zeros((splits, n), dtype=bool)
    if labels is None:
        for r in range(splits):
            is_cal[r, rng.permutation(n)[:n_cal]] = True
        return is_cal
    labels = np.asarray(labels)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    members = [np.flatnonzero(inverse == c) for c in range(len(classes))]
    quota = _stratum_quotas(counts, n_cal)
    for r in range(splits):
        for idx, q in zip(members, quota):
            if q:
                is_cal[r, idx[rng.permutation(len(idx))[:q]]] = True
    return is_cal


def sklearn_split(n: int, cal_ratio: float = 0.5, random_state: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """(cal_idx, test_idx) exactly as `train_test_split(range(n), train_size=cal_ratio, random_state=...)` returns
    (train, test), in the same order."""
    calibration_size(n, cal_ratio)
    n_train = math.floor(cal_ratio * n)
    n_test = n - n_train
    perm = np.random.RandomState(random_state).permutation(n)
    return perm[n_test : n_test + n_train], perm[:n_test]


def split_matrix(n: int, cal_idx: np.ndarray) -> np.ndarray:
    """is_cal[1, n] for a single split given by its calibration indices."""
    m = np.zeros((1, n), dtype=bool)
    m[0, cal_idx] = True
    return m
