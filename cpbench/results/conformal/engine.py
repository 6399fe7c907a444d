"""The many-splits split-conformal engine.

For R calibration/test splits of the same n items (is_cal[R, n]) and one score table, in two passes over chunks of
splits:

1. q-hat of every split without sorting per split. Each item's calibration score is computed once and all n are
   sorted once; a split's q-hat is the k-th smallest of its calibration scores, i.e. the score at the position of
   its k-th calibration member in that global order. That position concentrates in a narrow window of the global
   order (its spread is a negative-hypergeometric one, ~30 positions for n = 10,000), so per split we count the
   calibration members before the window (one matrix-vector product) and take a cumulative sum inside the window
   only. Splits whose k-th member falls outside the window (rare) are resolved on the full row.
2. Sets and metrics. With every split's threshold known, an item whose per-option statistics all lie outside
   (min threshold, max threshold] has the same prediction set under every split ("constant" items, the vast
   majority). Their contributions to each split's test-part sums (set size, covered, size histogram, coverage by
   size) are one matrix product test_mask @ per-item columns. The few "active" items are compared with each
   split's threshold directly.
All sums are integer counts (exact in floating point below 2^24 / 2^53), and each split's numbers depend only on its
own row, so results are identical for every chunk size and every way of splitting the work. Memory is about
chunk * n * 4 bytes plus chunk * n_active * K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cpbench.results.conformal.quantile import order_statistic
from cpbench.results.conformal.scores import ScoreTable
from cpbench.base.errors import CpbenchError

_CHUNK_ELEMENTS = 2_000_000


def default_chunk(n: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(1, n))


@dataclass
class SplitResults:
    """Per-split results of one score over R splits, plus counts pooled over all splits' test parts."""

    qhat: np.ndarray  # [R], in the scores' dtype
    coverage: np.ndarray  # float64[R]
    set_size: np.ndarray  # float64[R]
    size_counts: np.ndarray  # int64[K + 1]: test items (over all splits) with set size s
    size_covered: np.ndarray  # int64[K + 1]: ... of which covered
    class_counts: np.ndarray  # int64[K]: test items (over all splits) with gold option c
    class_covered: np.ndarray  # int64[K]


def _float_for_counts(n: int, k: int) -> type:
    """float32 products are exact for integer sums below 2^24; beyond that use float64."""
    return np.float32 if n * (k + 1) < 2**24 else np.float64


def _qhat_positions(is_cal: np.ndarray, order: np.ndarray, k: np.ndarray, n_cal: np.ndarray, chunk: int) -> np.ndarray:
    """Position in the global sorted order of each split's k-th calibration member."""
    R, n = is_cal.shape
    # Expected position of the k-th of n_cal members among n, and the spread of that position.
    centre = (k * (n + 1)) / (n_cal + 1) - 1
    spread = np.sqrt(k * (n - n_cal) * (n + 1) * (n_cal - k + 1) / ((n_cal + 1) ** 2 * (n_cal + 2)))
    a = max(0, int(math.floor(centre.min() - 8 * spread.max())) - 32)
    b = min(n, int(math.ceil(centre.max() + 8 * spread.max())) + 32)
    ftype = _float_for_counts(n, 0)
    before = np.zeros(n, dtype=ftype)
    before[order[:a]] = 1
    window = order[a:b]
    pos = np.empty(R, dtype=np.int64)
    for r0 in range(0, R, chunk):
        r1 = min(R, r0 + chunk)
        members = is_cal[r0:r1]
        below = np.rint(members.astype(ftype) @ before).astype(np.int64)
        cum = np.cumsum(members[:, window], axis=1, dtype=np.int64) + below[:, None]
        need = k[r0:r1]
        inside = (below < need) & (cum[:, -1] >= need) if b > a else np.zeros(r1 - r0, dtype=bool)
        pos[r0:r1][inside] = a + np.argmax(cum[inside] >= need[inside][:, None], axis=1)
        for r in np.flatnonzero(~inside):  # outside the window: count on the full row
            pos[r0 + r] = np.flatnonzero(members[r, order])[need[r] - 1]
    return pos


def evaluate(
    table: ScoreTable,
    labels: np.ndarray,
    is_cal: np.ndarray,
    alpha: float,
    quantile: str = "textbook",
    empty: str = "allow",
    chunk: int | None = None,
) -> SplitResults:
    """Run split conformal prediction with `table` on every split of `is_cal` (bool[R, n])."""
    if empty not in ("allow", "top1"):
        raise CpbenchError(f"unknown empty-set policy {empty!r} (use allow or top1)")
    labels = np.asarray(labels, dtype=np.int64)
    n, K = table.n, table.k
    if is_cal.ndim != 2 or is_cal.shape[1] != n or labels.shape != (n,):
        raise CpbenchError(f"split matrix {is_cal.shape} does not match {n} items")
    R = is_cal.shape[0]
    n_cal = is_cal.sum(axis=1)
    n_test = n - n_cal
    if (n_cal == 0).any():
        raise CpbenchError("empty calibration set in at least one split")
    if (n_test == 0).any():
        raise CpbenchError("empty test set in at least one split")
    k = np.array([order_statistic(int(m), float(alpha), quantile) for m in n_cal], dtype=np.int64)
    chunk = chunk or default_chunk(n)

    # ---- pass 1: q-hat of every split
    cal = table.cal_scores(labels)
    order = np.argsort(cal, kind="stable")
    qhat = cal[order][_qhat_positions(is_cal, order, k, n_cal, chunk)]
    thr = table.threshold(qhat)

    # ---- pass 2: sets. Items with no statistic in (lo, hi] have one set for every split.
    lo, hi = thr.min(), thr.max()
    stat = table.stat
    label_stat = table.label_stats(labels)
    fallback_covers = table.top == labels
    active = ((stat > lo) & (stat <= hi)).any(axis=1)
    size0 = (stat <= lo).sum(axis=1)
    cov0 = label_stat <= lo
    if empty == "top1":
        cov0 |= (size0 == 0) & fallback_covers
        size0 = np.maximum(size0, 1)
    ftype = _float_for_counts(n, K)
    const = np.zeros((n, 2 + 2 * (K + 1)), dtype=ftype)
    keep = ~active
    rows = np.flatnonzero(keep)
    const[rows, 0] = size0[rows]
    const[rows, 1] = cov0[rows]
    const[rows, 2 + size0[rows]] = 1
    const[rows, 2 + K + 1 + size0[rows]] = cov0[rows]

    act = np.flatnonzero(active)
    act_stat = np.ascontiguousarray(stat[act].T)  # [K, n_active]
    act_label_stat = label_stat[act]
    act_fallback = fallback_covers[act]

    covered_n = np.empty(R, dtype=np.int64)
    size_sum = np.empty(R, dtype=np.int64)
    size_counts = np.zeros(K + 1, dtype=np.int64)
    size_covered = np.zeros(K + 1, dtype=np.int64)
    item_tests = np.zeros(n, dtype=np.int64)
    act_covered = np.zeros(len(act), dtype=np.int64)

    for r0 in range(0, R, chunk):
        r1 = min(R, r0 + chunk)
        test = ~is_cal[r0:r1]
        sums = np.rint(test.astype(ftype) @ const).astype(np.int64)  # [c, 2 + 2(K+1)]
        t = thr[r0:r1, None]
        sizes = np.zeros((r1 - r0, len(act)), dtype=np.int64)
        for j in range(K):
            sizes += act_stat[j][None, :] <= t
        covered = act_label_stat[None, :] <= t
        if empty == "top1":
            none = sizes == 0
            sizes[none] = 1
            covered |= none & act_fallback[None, :]
        act_test = test[:, act]
        covered &= act_test
        covered_n[r0:r1] = sums[:, 1] + covered.sum(axis=1)
        size_sum[r0:r1] = sums[:, 0] + np.where(act_test, sizes, 0).sum(axis=1)
        size_counts += sums[:, 2 : 2 + K + 1].sum(axis=0) + np.bincount(sizes[act_test], minlength=K + 1)
        size_covered += sums[:, 2 + K + 1 :].sum(axis=0) + np.bincount(sizes[covered], minlength=K + 1)
        item_tests += test.sum(axis=0)
        act_covered += covered.sum(axis=0)

    item_covered = np.where(cov0 & keep, item_tests, 0)
    item_covered[act] = act_covered
    return SplitResults(
        qhat=qhat,
        coverage=covered_n / n_test,
        set_size=size_sum / n_test,
        size_counts=size_counts,
        size_covered=size_covered,
        class_counts=np.bincount(labels, weights=item_tests, minlength=K).astype(np.int64),
        class_covered=np.bincount(labels, weights=item_covered, minlength=K).astype(np.int64),
    )
