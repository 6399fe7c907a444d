"""Conformity score functions: pure numpy, vectorised over items and options.

Every score is returned as a `ScoreTable` holding, for each item i and option j,
  - `score[i, j]`: the conformity score item i would get if option j were its label (calibration ranks
    `score[i, y_i]`), and
  - `stat[i, j]`: the statistic that decides membership: option j is in the prediction set iff
    `stat[i, j] <= threshold(qhat)`.
For LAC and the randomised scores `stat == score` (the textbook set {y : s(x, y) <= qhat}). Non-randomised APS and
RAPS include the option that crosses the threshold, so their `stat` is the score of the option ranked just before.
`top[i]` is the option the `top1` empty-set policy falls back to.

Definitions (p = softmax probabilities, options ranked by descending p, o(j) = 1-based rank of option j,
C(r) = p of ranks 1..r summed, u = one uniform draw per item):
  lac        score = 1 - p_j                                   stat = score
  aps        score = C(o(j))                                   stat = C(o(j) - 1)      (crossing option included)
  aps_rand   score = C(o(j)) - u * p_j                         stat = score            (Romano et al. 2020; MAPIE)
  raps       score = C(o(j)) + lam * max(0, o(j) - k_reg)      stat = score of rank o(j) - 1
  raps_rand  score = C(o(j)) - u * p_j + lam * max(0, o(j) - k_reg)    stat = score
  lac_ye2024, aps_ye2024: Ye et al. 2024's float32 variants (see the functions).
Ties in p are ranked by option index (stable), except in aps_ye2024, which copies numpy's argsort reversed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cpbench.base.errors import CpbenchError

SCORES = ("lac", "aps", "aps_rand", "raps", "raps_rand")
YE2024_SCORES = ("lac_ye2024", "aps_ye2024")
RAPS_DEFAULTS = {"k_reg": 1, "lam": 0.1}  # fixed, not tuned; recorded in every result that uses RAPS


@dataclass(frozen=True)
class ScoreTable:
    """Per-option conformity scores and set-membership statistics of n items (see module docstring)."""

    name: str
    score: np.ndarray  # [n, K]
    stat: np.ndarray  # [n, K]
    top: np.ndarray  # int64[n]
    flip: bool = False  # ye2024 LAC: membership is p >= 1 - qhat, stored as -p <= -(1 - qhat)

    @property
    def n(self) -> int:
        return self.score.shape[0]

    @property
    def k(self) -> int:
        return self.score.shape[1]

    def cal_scores(self, labels: np.ndarray) -> np.ndarray:
        """Score of each item's true option: the values calibration takes a quantile of."""
        return self.score[np.arange(self.n), labels]

    def label_stats(self, labels: np.ndarray) -> np.ndarray:
        """Membership statistic of each item's true option (coverage is `label_stat <= threshold`)."""
        return self.stat[np.arange(self.n), labels]

    def threshold(self, qhat: np.ndarray | float) -> np.ndarray:
        """Map q-hat to the value `stat` is compared with, in the scores' own dtype."""
        q = np.asarray(qhat, dtype=self.score.dtype)
        if self.flip:
            return -(self.score.dtype.type(1) - q)
        return q

    def members(self, qhat: float, empty: str = "allow") -> np.ndarray:
        """Prediction sets bool[n, K] for one q-hat (used by the one-split estimator and the tests)."""
        sets = self.stat <= self.threshold(qhat)
        if empty == "top1":
            none = ~sets.any(axis=1)
            sets[np.flatnonzero(none), self.top[none]] = True
        elif empty != "allow":
            raise CpbenchError(f"unknown empty-set policy {empty!r} (use allow or top1)")
        return sets


def softmax(logits: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    """Row softmax computed in `dtype` (float64 by default: cheap here and keeps 1 - p exact enough that
    near-ties between calibration and test scores are decided by the model, not by rounding)."""
    x = np.asarray(logits, dtype=dtype)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _check(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs)
    if p.ndim != 2 or p.shape[1] < 2:
        raise CpbenchError(f"probabilities must have shape [n, K] with K >= 2, got {p.shape}")
    if not np.isfinite(p).all():
        raise CpbenchError("probabilities contain NaN or inf")
    return p


def lac(probs: np.ndarray) -> ScoreTable:
    """Least ambiguous set-valued classifier (Sadinle et al. 2019): s = 1 - p_y."""
    p = _check(probs)
    s = 1 - p
    return ScoreTable("lac", s, s, np.argmax(p, axis=1))


def _ranked(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Descending-probability order (ties by option index), cumulative mass per rank, 1-based rank per option."""
    order = np.argsort(-p, axis=1, kind="stable")
    cum = np.cumsum(np.take_along_axis(p, order, axis=1), axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(1, p.shape[1] + 1)[None, :], axis=1)
    return order, cum, rank


def _uniforms(u: np.ndarray | None, n: int) -> np.ndarray:
    if u is None:
        raise CpbenchError("randomised scores need one uniform draw per item (u)")
    u = np.asarray(u, dtype=np.float64)
    if u.shape != (n,):
        raise CpbenchError(f"need {n} uniform draws, got shape {u.shape}")
    return u


def aps(
    probs: np.ndarray,
    *,
    randomized: bool = False,
    u: np.ndarray | None = None,
    k_reg: int = 0,
    lam: float = 0.0,
) -> ScoreTable:
    """Adaptive prediction sets (Romano et al. 2020); with `lam > 0` regularised APS (RAPS, Angelopoulos et al. 2021).

    Non-randomised: calibration score = mass up to and including the true option (+ penalty); an option is in the
    set iff the score of the option ranked just before it is <= qhat, i.e. options are added in descending order
    until the running score exceeds qhat, and the option that crosses it is included (never empty).
    Randomised: score = mass up to and including the option minus u * p_option (+ penalty); set = {score <= qhat};
    may be empty.
    """
    p = _check(probs)
    n = p.shape[0]
    if k_reg < 0 or lam < 0:
        raise CpbenchError(f"RAPS needs k_reg >= 0 and lam >= 0, got k_reg={k_reg}, lam={lam}")
    order, cum, rank = _ranked(p)
    incl = np.take_along_axis(cum, rank - 1, axis=1)  # mass of ranks 1..o(j), in option order
    penalty = lam * np.maximum(0, rank - k_reg) if lam else None
    name = ("raps" if lam else "aps") + ("_rand" if randomized else "")
    if randomized:
        score = incl - _uniforms(u, n)[:, None] * p
        if penalty is not None:
            score = score + penalty
        return ScoreTable(name, score, score, order[:, 0].copy())
    score = incl if penalty is None else incl + penalty
    # score by rank, shifted one rank down: the statistic of the top option is 0 (always included)
    by_rank = np.take_along_axis(score, order, axis=1)
    before = np.concatenate([np.zeros((n, 1), dtype=score.dtype), by_rank[:, :-1]], axis=1)
    stat = np.take_along_axis(before, rank - 1, axis=1)
    return ScoreTable(name, score, stat, order[:, 0].copy())


def raps(
    probs: np.ndarray, *, k_reg: int = 1, lam: float = 0.1, randomized: bool = False, u: np.ndarray | None = None
) -> ScoreTable:
    return aps(probs, randomized=randomized, u=u, k_reg=k_reg, lam=lam)


def lac_ye2024(probs32: np.ndarray) -> ScoreTable:
    """Ye et al. 2024 LAC in float32: calibration score 1 - p_y; option j is in the set iff p_j >= 1 - qhat
    (their comparison, which is not always the same float32 decision as 1 - p_j <= qhat); empty -> argmax p."""
    p = _check(probs32).astype(np.float32, copy=False)
    score = np.float32(1) - p
    return ScoreTable("lac_ye2024", score, -p, np.argmax(p, axis=1), flip=True)


def aps_ye2024(probs32: np.ndarray) -> ScoreTable:
    """Ye et al. 2024 APS in float32: options ordered by `np.argsort(p)[::-1]` (numpy's default sort, reversed, so
    ties follow it); score of an option = float32 cumulative sum up to and including it; the set takes options in
    that order while the cumulative sum stays <= qhat (the crossing option is not included); empty -> first option
    of that order."""
    p = _check(probs32).astype(np.float32, copy=False)
    order = np.argsort(p, axis=1)[:, ::-1]
    cum = np.cumsum(np.take_along_axis(p, order, axis=1), axis=1)
    score = np.empty_like(cum)
    np.put_along_axis(score, order, cum, axis=1)
    return ScoreTable("aps_ye2024", score, score, order[:, 0].copy())


def build(
    name: str, probs: np.ndarray, *, u: np.ndarray | None = None, k_reg: int | None = None, lam: float | None = None
) -> ScoreTable:
    """Score table by name: lac, aps, aps_rand, raps, raps_rand, lac_ye2024, aps_ye2024."""
    k_reg = RAPS_DEFAULTS["k_reg"] if k_reg is None else k_reg
    lam = RAPS_DEFAULTS["lam"] if lam is None else lam
    if name == "lac":
        return lac(probs)
    if name in ("aps", "aps_rand"):
        return aps(probs, randomized=name == "aps_rand", u=u)
    if name in ("raps", "raps_rand"):
        return raps(probs, k_reg=k_reg, lam=lam, randomized=name == "raps_rand", u=u)
    if name == "lac_ye2024":
        return lac_ye2024(probs)
    if name == "aps_ye2024":
        return aps_ye2024(probs)
    raise CpbenchError(f"unknown score {name!r} (choose from {', '.join(SCORES + YE2024_SCORES)})")
