"""One artifact's items in the order and subset an analysis protocol reads, with everything the paired bootstrap
(`cpbench.results.analysis.bootstrap`) reuses (numpy only).

Speed: per artifact, scores, sorted true-label scores and per-item metric columns are computed once and cached
(keyed by content hash and protocol).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from cpbench.results.conformal import metrics as M
from cpbench.results.conformal.quantile import order_statistic
from cpbench.results.conformal.scores import ScoreTable, build, softmax
from cpbench.results.conformal.splits import calibration_size, canonical_order
from cpbench.base.errors import CpbenchError

YE2024_EXCLUDED_IDS = ("1", "3", "5", "7", "9")
YE2024_SCORES = {"lac": "lac_ye2024", "aps": "aps_ye2024"}


@dataclass
class ItemView:
    """One artifact's items in analysis order, with everything the bootstrap reuses (computed once, cached)."""

    ids: list[str]
    labels: np.ndarray
    logp: np.ndarray  # float64[n, K] log-softmax
    top: np.ndarray  # int64[n] argmax of the logits (first on ties)
    values: np.ndarray  # float64[n, m]: M.item_values columns (acc, brier, nll, entropy, idk, nota, ECE gaps)
    n_value_cols: int
    letters: list[str]
    protocol: str
    alpha: float
    cal_ratio: float
    seed: int
    probs_for_scores: np.ndarray
    scores: dict[str, "ScorePrep"] = field(default_factory=dict)
    cache_key: tuple | None = None  # set by cached_view: lets bootstrap.paired_draws memoise comparisons

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def k(self) -> int:
        return self.logp.shape[1]

    @property
    def empty(self) -> str:
        return "top1" if self.protocol == "ye2024" else "allow"

    @property
    def quantile_rule(self) -> str:
        return "ye2024" if self.protocol == "ye2024" else "textbook"

    def tau(self) -> float:
        """The coverage level the split quantile targets: k / (n_cal + 1) (exchangeability), as a plug-in level."""
        n_cal = calibration_size(self.n, self.cal_ratio)
        return order_statistic(n_cal, float(self.alpha), self.quantile_rule) / (n_cal + 1)

    def score(self, name: str) -> "ScorePrep":
        if name not in self.scores:
            u = np.random.default_rng([self.seed, 1]).random(self.n) if name.endswith("_rand") else None
            table_name = YE2024_SCORES.get(name, name) if self.protocol == "ye2024" else name
            if self.protocol == "ye2024" and name not in YE2024_SCORES:
                raise CpbenchError(f"score {name!r} is not available in the ye2024 protocol")
            self.scores[name] = ScorePrep.of(build(table_name, self.probs_for_scores, u=u), self.labels)
        return self.scores[name]


@dataclass
class ScorePrep:
    table: ScoreTable
    cal: np.ndarray  # true-label conformity scores
    order: np.ndarray  # argsort of cal
    cal_sorted: np.ndarray
    label_stat: np.ndarray
    covers_fallback: np.ndarray  # top1 empty-set fallback is the gold option

    plans: dict = field(default_factory=dict)

    @classmethod
    def of(cls, table: ScoreTable, labels: np.ndarray) -> "ScorePrep":
        cal = table.cal_scores(labels)
        order = np.argsort(cal, kind="stable")
        return cls(table, cal, order, cal[order], table.label_stats(labels), table.top == labels)

    def thresholds(self, what: str) -> np.ndarray:
        """Each option's (size) or the gold option's (coverage) threshold on the calibration-score scale."""
        shift = 1.0 if self.table.flip else 0.0  # ye2024 LAC compares -p with -(1 - q): in iff q >= stat + 1
        return (self.table.stat if what == "size" else self.label_stat) + shift

    def positions(self, what: str) -> np.ndarray:
        """How many calibration scores lie below each threshold (`thresholds`): where an option enters the set as
        the quantile moves up. Computed once per prep; the smoothed sums and `bootstrap.quantile_move` read it."""
        key = ("positions", what)
        if key not in self.plans:
            self.plans[key] = np.searchsorted(self.cal_sorted, self.thresholds(what), side="left")
        return self.plans[key]

    def before(self, a: int) -> np.ndarray:
        key = ("before", a)
        if key not in self.plans:
            v = np.zeros(len(self.cal))
            v[self.order[:a]] = 1.0
            self.plans[key] = v
        return self.plans[key]

    def smooth_plan(self, what: str, h: np.ndarray) -> tuple:
        """Which options are always in, and the others grouped by their place in the sorted calibration scores."""
        n = len(self.cal)
        key = (what, id(h))
        if key in self.plans:
            return self.plans[key]
        support = np.flatnonzero((h > 1e-7) & (h < 1 - 1e-7))
        lo_pos = int(support[0]) if len(support) else int(np.searchsorted(h, 0.5))
        hi_pos = int(support[-1]) + 1 if len(support) else lo_pos + 1
        margin = int(6 * math.sqrt(max(hi_pos * (1 - lo_pos / n), 1.0))) + 16  # sd of a replicate's weighted count
        a, b = max(0, lo_pos - margin), min(n, hi_pos + margin)
        ins = self.positions(what)
        if ins.ndim == 1:
            ins = ins[:, None]
        always = (ins <= a).sum(axis=1).astype(np.float64)
        rows, cols = np.nonzero((ins > a) & (ins < b))
        t = ins[rows, cols] - a
        order = np.argsort(t, kind="stable")
        items, t = rows[order], t[order]
        starts = np.flatnonzero(np.diff(np.concatenate([[-1], t]))) if len(t) else np.zeros(0, dtype=np.int64)
        plan = (always, items, starts, t[starts], a, lo_pos, hi_pos, b)
        self.plans[key] = plan
        return plan


def item_view(artifact, protocol: str = "default", alpha: float = 0.1, cal_ratio: float = 0.5,
              seed: int = 0) -> ItemView:
    """Items of `artifact` in the order and subset the protocol analyses (default: sorted by id; ye2024: stored order
    without its demonstration ids), with per-item values precomputed."""
    if protocol == "ye2024":
        keep = np.array([i not in YE2024_EXCLUDED_IDS for i in artifact.ids], dtype=bool)
        idx = np.flatnonzero(keep)
    elif protocol == "default":
        idx = canonical_order(artifact.ids)
    else:
        raise CpbenchError(f"unknown protocol {protocol!r}")
    ids = [artifact.ids[i] for i in idx]
    logits = np.asarray(artifact.logits)[idx]
    labels = np.asarray(artifact.labels, dtype=np.int64)[idx]
    calibration_size(len(ids), cal_ratio)
    values, cols = M.item_values(logits, labels, list(artifact.letters))
    probs = softmax(logits, np.float32 if protocol == "ye2024" else np.float64)
    return ItemView(ids=ids, labels=labels, logp=M.log_softmax(logits), top=np.argmax(logits, axis=1),
                    values=values, n_value_cols=len(cols), letters=list(artifact.letters), protocol=protocol,
                    alpha=float(alpha), cal_ratio=float(cal_ratio), seed=int(seed), probs_for_scores=probs)


_VIEWS: OrderedDict[tuple, ItemView] = OrderedDict()
_VIEW_CACHE = 64


def cached_view(artifact, protocol: str, alpha: float, cal_ratio: float, seed: int, key: str = "") -> ItemView:
    """`item_view` memoised by (content hash or `key`, protocol settings): a baseline meets many candidates."""
    ck = (key or artifact.content_hash, protocol, float(alpha), float(cal_ratio), int(seed))
    if ck in _VIEWS:
        _VIEWS.move_to_end(ck)
        return _VIEWS[ck]
    view = item_view(artifact, protocol, alpha, cal_ratio, seed)
    view.cache_key = ck
    _VIEWS[ck] = view
    while len(_VIEWS) > _VIEW_CACHE:
        _VIEWS.popitem(last=False)
    return view
