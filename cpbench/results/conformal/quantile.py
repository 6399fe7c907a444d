"""Which order statistic of the n calibration scores is q-hat.

`textbook`: the k-th smallest with k = ceil((n + 1)(1 - alpha)) (Vovk et al.; Angelopoulos & Bates 2021; MAPIE 1.6's
`np.quantile(scores, k / n, method="lower")` picks the same element). Valid: P(test score <= qhat) >= 1 - alpha, and
< 1 - alpha + 1 / (n + 1) for continuous scores.

`ye2024`: Ye et al. 2024 call `np.quantile(scores, k / n, method="higher")` with the same k. numpy's "higher" takes
index ceil((k / n) * (n - 1)) (0-based), which is k (one order statistic higher than textbook) whenever k < n, and
n - 1 (the maximum, same as textbook) when k == n. We ask numpy itself for the index, so float rounding in k / n is
reproduced exactly.

Both need k <= n, i.e. n >= (1 - alpha) / alpha calibration points: with fewer, no finite calibration score
achieves the guarantee. We refuse with an error rather than silently returning all-option sets.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import numpy as np

from cpbench.base.errors import CpbenchError

QuantileRule = Literal["textbook", "ye2024"]
RULES = ("textbook", "ye2024")


def check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not (0.0 < a < 1.0) or math.isnan(a):
        raise CpbenchError(f"alpha must be in (0, 1), got {alpha}")
    return a


def _k(n: int, alpha: float) -> int:
    # The float expression MAPIE and Ye et al. use; checked equal to exact rational arithmetic for decimal alphas.
    return int(np.ceil((n + 1) * (1 - alpha)))


def min_calibration_size(alpha: float) -> int:
    """Smallest n with ceil((n + 1)(1 - alpha)) <= n."""
    alpha = check_alpha(alpha)
    n = max(1, math.floor((1 - alpha) / alpha) - 1)
    while _k(n, alpha) > n:
        n += 1
    return n


@lru_cache(maxsize=256)
def order_statistic(n: int, alpha: float, rule: str = "textbook") -> int:
    """1-based index k such that q-hat is the k-th smallest of n calibration scores."""
    alpha = check_alpha(alpha)
    if rule not in RULES:
        raise CpbenchError(f"unknown quantile rule {rule!r} (use textbook or ye2024)")
    if n < 1:
        raise CpbenchError("empty calibration set")
    k = _k(n, alpha)
    if k > n:
        raise CpbenchError(
            f"{n} calibration items are too few for alpha={alpha:g}: ceil((n+1)(1-alpha)) = {k} > n; "
            f"need at least {min_calibration_size(alpha)}"
        )
    if rule == "textbook":
        return k
    return int(np.quantile(np.arange(n, dtype=np.float64), k / n, method="higher")) + 1


def conformal_quantile(scores: np.ndarray, alpha: float, rule: str = "textbook") -> np.generic:
    """q-hat of one calibration set, in the scores' dtype."""
    s = np.asarray(scores)
    if s.ndim != 1:
        raise CpbenchError(f"calibration scores must be 1-D, got shape {s.shape}")
    k = order_statistic(len(s), float(alpha), rule)
    return np.partition(s, k - 1)[k - 1]
