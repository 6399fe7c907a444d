"""Per-split metrics that do not depend on a conformal score: accuracy, calibration measures, top-1 E/F rates;
plus the summaries (mean, std, 95% interval across splits) shared by every metric.

Per-split means are sums over each split's test part. To make them bit-identical whatever the chunk of splits the
engine processes at once (BLAS may sum in a different order for different matrix shapes), per-item values are
rounded to fixed point (multiples of 2^-s, s <= 30, chosen so no sum can exceed 2^53) before the matrix product:
integer-valued float64 sums are exact in any order. The rounding moves a mean by less than 2^-(s+1) (< 1e-9 for
n = 10,000 items).

Definitions (p = float64 softmax of the logits, top-1 = argmax of the logits, first on ties):
  acc      fraction of test items whose top-1 is the gold option
  ece      expected calibration error of the top-1 confidence, 15 equal-width bins (lo, hi], |mean conf - acc|
           weighted by bin size (Guo et al. 2017)
  brier    sum over options of (p_j - 1[j = y])^2, mean over items (multi-class Brier, range [0, 2])
  nll      -log p_y from log-softmax, capped at -log(float64 eps) = 36.04 nats (as scikit-learn's log_loss clips)
  entropy  -sum p_j log p_j in nats
  idk_rate / nota_rate  fraction of test items whose top-1 is option "E" ("I don't know") / "F" ("None of the
           above"); null when the letters have no E / F
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

ECE_BINS = 15
_NLL_CAP = -math.log(np.finfo(np.float64).eps)
_MAX_ITEM_VALUE = 64.0  # bound on |per-item value| of every column (nll <= 36.04, brier <= 2, ...)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    z = x - x.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def item_values(logits: np.ndarray, labels: np.ndarray, letters: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Per-item columns whose test-part means are the per-split metrics: correct, brier, nll, entropy, idk, nota,
    then one ECE column per bin holding (confidence - correct) for items in that bin and 0 elsewhere."""
    logp = log_softmax(logits)
    p = np.exp(logp)
    n = p.shape[0]
    rows = np.arange(n)
    top = np.argmax(logits, axis=1)
    correct = (top == labels).astype(np.float64)
    onehot = np.zeros_like(p)
    onehot[rows, labels] = 1.0
    brier = ((p - onehot) ** 2).sum(axis=1)
    nll = np.minimum(-logp[rows, labels], _NLL_CAP)
    entropy = -(p * np.where(p > 0, logp, 0.0)).sum(axis=1)
    letters = list(letters)
    idk = (top == letters.index("E")).astype(np.float64) if "E" in letters else np.zeros(n)
    nota = (top == letters.index("F")).astype(np.float64) if "F" in letters else np.zeros(n)
    conf = p[rows, top]
    bins = np.clip(np.ceil(conf * ECE_BINS).astype(np.int64) - 1, 0, ECE_BINS - 1)
    gap = np.zeros((n, ECE_BINS))
    gap[rows, bins] = conf - correct
    cols = ["acc", "brier", "nll", "entropy", "idk_rate", "nota_rate"]
    return np.column_stack([correct, brier, nll, entropy, idk, nota, gap]), cols


def fixed_point_scale(n: int) -> float:
    return 2.0 ** min(30, math.floor(math.log2(2.0**52 / (max(n, 1) * _MAX_ITEM_VALUE))))


def split_item_means(is_cal: np.ndarray, values: np.ndarray, chunk: int) -> np.ndarray:
    """sums[R, m] / n_test: exact per-split sums over test items of fixed-point per-item values (see module doc).
    Returns the mean of each column over each split's test part, except ECE columns, which are combined by
    `calibration_from_means`."""
    n = values.shape[0]
    scale = fixed_point_scale(n)
    fixed = np.rint(values * scale)
    out = np.empty((is_cal.shape[0], values.shape[1]))
    for r0 in range(0, is_cal.shape[0], chunk):
        test = ~is_cal[r0 : r0 + chunk]
        sums = test.astype(np.float64) @ fixed
        out[r0 : r0 + chunk] = sums / scale / test.sum(axis=1, keepdims=True)
    return out


def per_split_base(is_cal: np.ndarray, logits: np.ndarray, labels: np.ndarray, letters: Sequence[str], chunk: int):
    """dict of float64[R]: acc, ece, brier, nll, entropy, idk_rate, nota_rate (None for rates without letter)."""
    values, cols = item_values(logits, labels, letters)
    means = split_item_means(is_cal, values, chunk)
    out: dict[str, np.ndarray | None] = {c: means[:, j] for j, c in enumerate(cols)}
    out["ece"] = np.abs(means[:, len(cols) :]).sum(axis=1)
    if "E" not in letters:
        out["idk_rate"] = None
    if "F" not in letters:
        out["nota_rate"] = None
    return out


def uacc(acc: np.ndarray, set_size: np.ndarray, k: int) -> np.ndarray:
    """UAcc = acc * sqrt(K) / mean set size (Ye et al. 2024); 0 where every set is empty (no information)."""
    size = np.asarray(set_size, dtype=np.float64)
    return np.where(size > 0, np.asarray(acc) * math.sqrt(k) / np.where(size > 0, size, 1.0), 0.0)


def summary(values: np.ndarray) -> tuple[float, float | None, list[float] | None]:
    """(mean, std, [2.5, 97.5] percentiles) across splits. std uses ddof=1; with one split std and the interval are
    undefined and returned as None."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    if v.size < 2:
        return mean, None, None
    lo, hi = np.percentile(v, [2.5, 97.5])
    return mean, float(v.std(ddof=1)), [float(lo), float(hi)]


def ratio_map(num: np.ndarray, den: np.ndarray, keys: Sequence[str]) -> dict[str, float | None]:
    """{key: num/den}, None where den == 0 (no test item fell in the group)."""
    return {str(key): (float(a) / float(b) if b else None) for key, a, b in zip(keys, num, den)}
