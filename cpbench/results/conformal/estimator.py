"""A small scikit-learn-style estimator for one calibration set (the engine does many splits at once)."""

from __future__ import annotations

import numpy as np

from cpbench.results.conformal.quantile import check_alpha, conformal_quantile
from cpbench.results.conformal.scores import RAPS_DEFAULTS, ScoreTable, build
from cpbench.base.errors import CpbenchError


class SplitConformal:
    """Split conformal prediction on stored probabilities.

    >>> cp = SplitConformal(score="lac", alpha=0.1).fit(probs_cal, y_cal)
    >>> sets = cp.predict_set(probs_test)          # bool[n_test, K]

    score: lac, aps, aps_rand, raps, raps_rand, lac_ye2024, aps_ye2024 (see cpbench.results.conformal.scores);
    quantile: textbook or ye2024 (see cpbench.results.conformal.quantile); empty: allow (empty sets stay empty) or top1
    (an empty set becomes the top option). Randomised scores draw their uniforms from `random_state`.
    """

    def __init__(
        self,
        score: str = "lac",
        alpha: float = 0.1,
        quantile: str = "textbook",
        empty: str = "allow",
        k_reg: int = RAPS_DEFAULTS["k_reg"],
        lam: float = RAPS_DEFAULTS["lam"],
        random_state: int | np.random.Generator | None = None,
    ):
        self.score = score
        self.alpha = alpha
        self.quantile = quantile
        self.empty = empty
        self.k_reg = k_reg
        self.lam = lam
        self.random_state = random_state

    def _rng(self) -> np.random.Generator:
        if not hasattr(self, "_rng_"):
            self._rng_ = np.random.default_rng(self.random_state)
        return self._rng_

    def _table(self, probs: np.ndarray, u: np.ndarray | None) -> ScoreTable:
        p = np.asarray(probs)
        if p.ndim != 2:
            raise CpbenchError(f"probabilities must have shape [n, K], got {p.shape}")
        if u is None and self.score.endswith("_rand"):
            u = self._rng().random(p.shape[0])
        return build(self.score, p, u=u, k_reg=self.k_reg, lam=self.lam)

    def fit(self, probs_cal: np.ndarray, y_cal: np.ndarray, u: np.ndarray | None = None) -> "SplitConformal":
        """Calibrate on (probabilities, labels); `u`: optional uniforms for randomised scores (else drawn)."""
        check_alpha(self.alpha)
        if self.empty not in ("allow", "top1"):
            raise CpbenchError(f"unknown empty-set policy {self.empty!r} (use allow or top1)")
        table = self._table(probs_cal, u)
        y = np.asarray(y_cal, dtype=np.int64)
        if y.shape != (table.n,):
            raise CpbenchError(f"{y.shape[0] if y.ndim else 0} labels for {table.n} calibration items")
        if ((y < 0) | (y >= table.k)).any():
            raise CpbenchError(f"calibration labels must be in [0, {table.k})")
        self.cal_scores_ = table.cal_scores(y)
        self.qhat_ = conformal_quantile(self.cal_scores_, self.alpha, self.quantile)
        self.n_cal_ = table.n
        self.n_options_ = table.k
        return self

    def predict_set(self, probs: np.ndarray, u: np.ndarray | None = None) -> np.ndarray:
        """bool[n, K] prediction sets; `u` as in `fit`."""
        if not hasattr(self, "qhat_"):
            raise CpbenchError("SplitConformal.predict_set called before fit")
        table = self._table(probs, u)
        if table.k != self.n_options_:
            raise CpbenchError(f"fitted on {self.n_options_} options, got {table.k}")
        return table.members(self.qhat_, self.empty)
