"""Item-level paired inference between two artifacts of the same items (numpy only).

What the interval covers (docs/conformal.md): the items are a sample from a population, and a record's number is the
mean over S random calibration/test splits of that sample. For a smooth functional of the item distribution (accuracy,
Brier, NLL, ECE, mean set size with the calibration quantile, UAcc), the mean over many random splits is, to first
order, the full-sample plug-in estimator: every item is in calibration with probability r and in test with 1 - r, so
its influence is its test contribution plus its effect on the quantile. Hence

    Var(record delta) ~= Var_items(plug-in delta) + Var_split(per-split delta) / S

The first term is estimated by a paired item bootstrap of the plug-in statistic that re-runs calibration inside every
replicate: each replicate resamples the items with replacement (the same indices for both models), takes the
conformal quantile of the resampled true-label scores at the level the split quantile targets,
tau = k / (n_cal + 1) with k the finite-sample order statistic of the analysis (ceil((n_cal + 1)(1 - alpha)) for the
textbook rule), and measures both models on the resampled items. The second term comes from the records' stored
per-split paired differences. The interval is normal with the total standard error.

Diagnostics that compare the two models item by item (flips, agreement, KL, set churn, Jaccard, newly confidently
wrong) are measured on the full sample at the plug-in quantile and bootstrapped in the same replicate loop. A share
of all items (flips, agreement) is a binomial count and gets the exact (Clopper-Pearson) interval and tests
(`binomial`); a set-based share (churn, newly confidently wrong) a Wilson score interval at the bootstrap's effective
sample size (p(1 - p) / se^2), which keeps its coverage near nominal at small n and small p where a normal interval
does not; set-based diagnostics (churn, newly confidently wrong, Jaccard) also reach the bootstrap percentile ends,
since they jump or saturate with q-hat's position.

Speed: per artifact, scores, sorted true-label scores and per-item metric columns are computed once and cached
(keyed by content hash and protocol); bootstrap counts are shared by every cell with the same n (common random
numbers); the quantile of each replicate is found in a narrow window of the sorted order, and only the few items whose
set changes between replicates are compared option by option (the same two tricks as `cpbench.results.conformal.engine`).
The smoothed set size and coverage read the bootstrap counts transposed (float32, exact for counts) and group the
options of the quantile's window with one sparse product (SciPy when installed, else chunked reduceat); the gate asks
for no set diagnostics (`set_pairs=False`) and reuses the score-independent sums across its per-score calls.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from statistics import NormalDist
from typing import Literal, Sequence

import numpy as np

from cpbench.results.analysis import binomial
from cpbench.results.conformal import metrics as M
from cpbench.results.conformal.quantile import order_statistic
from cpbench.results.conformal.scores import ScoreTable, build, softmax
from cpbench.results.conformal.splits import calibration_size, canonical_order
from cpbench.base.errors import CpbenchError

N_BOOT = 300
LEVEL = 0.95
YE2024_EXCLUDED_IDS = ("1", "3", "5", "7", "9")
YE2024_SCORES = {"lac": "lac_ye2024", "aps": "aps_ye2024"}

MODEL_METRICS = ("acc", "brier", "nll", "entropy", "ece", "idk_rate", "nota_rate")  # score-independent
SCORE_METRICS = ("coverage", "set_size", "uacc")  # per conformal score
PAIR_METRICS = ("flip_cw", "flip_wc", "agreement", "kl")  # item by item, score-independent
SET_PAIR_METRICS = ("churn", "jaccard", "newly_wrong")  # item by item, per conformal score
PROPORTIONS = frozenset({"flip_cw", "flip_wc", "agreement", "churn", "newly_wrong"})
_NORMAL = NormalDist()


def z_of(level_one_sided: float) -> float:
    return _NORMAL.inv_cdf(level_one_sided)


# ------------------------------------------------------------------------------------------------ per artifact
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
    cache_key: tuple | None = None  # set by cached_view: lets paired_draws memoise comparisons

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
        the quantile moves up. Computed once per prep; the smoothed sums and `quantile_move` read it."""
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


# --------------------------------------------------------------------------------------------- bootstrap core
@lru_cache(maxsize=8)
def boot_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """float64[1 + n_boot, n]: row 0 all ones (the sample itself), then multinomial resampling counts.

    Shared by every comparison of n items (common random numbers: a leaderboard's intervals use the same draws)."""
    rng = np.random.default_rng([seed, n, 8])
    idx = rng.integers(0, n, size=(n_boot, n))
    out = np.empty((1 + n_boot, n))
    out[0] = 1.0
    for r in range(n_boot):  # one row at a time: the counts of a row stay in cache (faster than one bincount)
        out[r + 1] = np.bincount(idx[r], minlength=n)
    out.setflags(write=False)
    return out


def _quantile_positions(w: np.ndarray, order: np.ndarray, tau: float) -> np.ndarray:
    """Per row of w, the smallest position p in the sorted order whose cumulative weight reaches tau * total."""
    B, n = w.shape
    target = tau * w.sum(axis=1) - 1e-9
    centre = tau * n
    spread = math.sqrt(max(n * tau * (1 - tau), 1.0))
    a = max(0, int(centre - 8 * spread) - 32)
    b = min(n, int(math.ceil(centre + 8 * spread)) + 32)
    before = np.zeros(n)
    before[order[:a]] = 1.0
    below = w @ before
    cum = np.cumsum(w[:, order[a:b]], axis=1) + below[:, None]
    inside = (below < target) & (cum[:, -1] >= target)
    pos = np.empty(B, dtype=np.int64)
    pos[inside] = a + np.argmax(cum[inside] >= target[inside, None], axis=1)
    for r in np.flatnonzero(~inside):  # rare: the quantile fell outside the window
        pos[r] = int(np.searchsorted(np.cumsum(w[r, order]), target[r]))
    return np.minimum(pos, n - 1)


def _counts(sorted_stat: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """int8[B, m]: how many options of each of m items are in the set under each of B thresholds (sets are nested:
    an item's set is its first c options in increasing order of the membership statistic).

    With the thresholds sorted, option (i, j) is in the set for a suffix of them starting at searchsorted(...):
    one bincount of those start positions and a cumulative sum give every count (no B x m x K comparison)."""
    B, (m, K) = len(thr), sorted_stat.shape
    order = np.argsort(thr, kind="stable")
    start = np.searchsorted(thr[order], sorted_stat, side="left")  # [m, K]: first sorted threshold that admits
    flat = (start * m + np.arange(m)[:, None]).ravel()
    counts = np.bincount(flat, minlength=(B + 1) * m)[: (B + 1) * m].reshape(B + 1, m)
    cum = np.cumsum(counts[:B], axis=0, dtype=np.int16).astype(np.int8)
    out = np.empty_like(cum)
    out[order] = cum
    return out


def _overlaps(order_b: np.ndarray, order_c: np.ndarray) -> np.ndarray:
    """int8[m, K+1, K+1]: |first cb options of the baseline's order  &  first cc of the candidate's| per item."""
    m, K = order_b.shape
    rank_b = np.empty_like(order_b)
    np.put_along_axis(rank_b, order_b, np.arange(K)[None, :], axis=1)
    # in_b[i, cb, k]: the candidate's k-th option is among the baseline's first cb
    in_b = rank_b[np.arange(m)[:, None], order_c][:, None, :] < np.arange(K + 1)[None, :, None]
    out = np.zeros((m, K + 1, K + 1), dtype=np.int8)
    out[:, :, 1:] = np.cumsum(in_b, axis=2, dtype=np.int8)
    return out


@lru_cache(maxsize=32)
def split_position_cdf(n: int, n_cal: int, k: int) -> np.ndarray:
    """H[m] = P(pos <= m), m = 0..n, where pos is the rank among all n items of the k-th smallest calibration score
    of a random calibration part of n_cal items (negative hypergeometric): where a random split puts q-hat."""
    lf = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))])

    def log_comb(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return lf[a] - lf[b] - lf[a - b]

    j = np.arange(k, n - n_cal + k + 1)
    logp = log_comb(j - 1, np.full_like(j, k - 1)) + log_comb(n - j, np.full_like(j, n_cal - k)) - log_comb(
        np.array([n]), np.array([n_cal]))
    pmf = np.zeros(n + 1)
    pmf[j] = np.exp(logp)
    h = np.cumsum(pmf)
    h /= h[-1]
    h.setflags(write=False)
    return h


def _transposed(w: np.ndarray) -> np.ndarray:
    """w.T as a contiguous [n, B] array (float32 when every weight is a small integer count: exact, half the memory
    traffic). Gathering items is then a gather of contiguous rows, 2-4x faster than gathering columns of w."""
    if w.size and float(w.max()) < 2**20 and np.array_equal(w, np.rint(w)):
        return np.ascontiguousarray(w.T, dtype=np.float32)
    return np.ascontiguousarray(w.T)


def _grouped(wT: np.ndarray, prep: "ScorePrep", what: str, h: np.ndarray, items: np.ndarray,
             starts: np.ndarray) -> np.ndarray:
    """[groups, B]: per group of the smoothing plan, the summed weight rows of its options' items, i.e. a sparse
    (groups x n) 0/1-count matrix times w.T. With SciPy installed (optional) a CSR product (about 10x faster than
    gathering the rows: no [options, B] intermediate); else gathers and reduceat in cache-sized chunks of groups."""
    key = (what, id(h), "csr")
    if key not in prep.plans:
        try:
            import scipy.sparse as sp

            g = np.repeat(np.arange(len(starts)), np.diff(np.concatenate([starts, [len(items)]])))
            prep.plans[key] = sp.csr_matrix((np.ones(len(items)), (g, items)), shape=(len(starts), len(prep.cal)))
        except ImportError:  # pragma: no cover - SciPy is not a dependency
            prep.plans[key] = None
    csr = prep.plans[key]
    if csr is not None:
        return csr.astype(wT.dtype, copy=False) @ wT
    G = len(starts)
    out = np.empty((G, wT.shape[1]), dtype=wT.dtype)
    bounds = [*range(0, G, 64), G]
    ends = np.concatenate([starts[1:], [len(items)]])
    for g0, g1 in itertools.pairwise(bounds):
        i0, i1 = int(starts[g0]), int(ends[g1 - 1])
        out[g0:g1] = np.add.reduceat(wT[items[i0:i1]], starts[g0:g1] - i0, axis=0)
    return out


def _smoothed_sums(w: np.ndarray, prep: "ScorePrep", what: str, h: np.ndarray,
                   wT: np.ndarray | None = None) -> np.ndarray:
    """Per replicate, sum over items of w_i * sum_j P(option j of item i is in the set) with q-hat at a random split
    position (the split average's smoothing of the quantile); `what` is "size" (every option) or "coverage" (the
    gold option).

    An option with threshold x (on the score scale) is in the set iff q-hat >= x, i.e. iff the split position
    exceeds L = (weighted count of calibration scores below x): probability 1 - H[L]. Options far below / above the
    positions H spreads over are in / out for every replicate (one matrix-vector product); the others are grouped by
    their place in the sorted calibration scores (one gather of rows of w.T and one reduceat), and L is read from
    the replicate's cumulative weights in that window. `wT` is `_transposed(w)` (computed when not given)."""
    B, n = w.shape
    if wT is None:
        wT = _transposed(w)
    plan = prep.smooth_plan(what, h)
    always, items, starts, bucket, a, lo_pos, hi_pos, b = plan
    below = w @ prep.before(a)
    width = max(b - a, 1)  # the whole window (not just up to its last option: the check below needs the weight
    # below b, else tied scores, which leave the window's top buckets empty, send every replicate to the slow path)
    cum = np.empty((width + 1, B))
    cum[0] = below
    np.cumsum(wT[prep.order[a:a + width]], axis=0, out=cum[1:], dtype=np.float64)
    cum[1:] += below[None, :]
    out = w @ always
    if len(items):
        grouped = _grouped(wT, prep, what, h, items, starts)  # [groups, B]
        L = np.rint(cum[bucket]).astype(np.int64)
        np.clip(L, 0, n, out=L)
        out += np.einsum("gb,gb->b", grouped, 1.0 - h[L], dtype=np.float64)
    ok = (below < lo_pos + 1e-9) & (cum[-1] >= min(hi_pos, n) - 1e-9 - (n - a - width <= 0) * n)
    _SLOW_ROWS[0] += int((~ok).sum())
    for r in np.flatnonzero(~ok):  # rare: a replicate's positions left the window: count on the full row
        full = np.concatenate([[0.0], np.cumsum(w[r, prep.order])])
        ins = prep.positions(what)
        inside = 1.0 - h[np.clip(np.rint(full[ins]).astype(np.int64), 0, n)]
        out[r] = float(w[r] @ (inside.sum(axis=1) if inside.ndim == 2 else inside))
    return out


_SLOW_ROWS = [0]  # replicates counted on the full row (a diagnostic for tests and benchmarks)


def _rowdot(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", w, x, dtype=np.float64)


@dataclass
class Draws:
    """Row 0: the full-sample plug-in value; rows 1..B: bootstrap replicates. Keys: metric names for the two models
    (`base`, `cand`: {metric: array}) and pair metrics (`pair`: {metric: array})."""

    base: dict[str, np.ndarray]
    cand: dict[str, np.ndarray]
    pair: dict[str, np.ndarray]
    n: int
    n_boot: int
    # per metric: (sum over items of d_i^2, number of items with d_i != 0), d_i the item's own difference at the
    # full-sample quantiles (set size, coverage, Jaccard): the variance floor when few items' sets differ
    floor: dict[str, tuple[float, int]] = field(default_factory=dict)
    item_d: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # items' own set-size
    # differences at the full-sample quantiles, as (distinct values, counts)
    # per score: how many sample items' true-label scores lie beyond the full-sample quantile (the fewer of the two
    # models): the items the quantile's position, and so every set-based metric's item-level spread, rests on
    tail: dict[str, int] = field(default_factory=dict)
    # per score: the expected number of sample items on different sides of the two models' split quantiles (at a
    # random split position; `quantile_crossing`): the items a set-size difference's quantile part rests on
    crossing: dict[str, float] = field(default_factory=dict)
    # per score: how much the two models' mean set size moves (options, averaged over the two models) when one more
    # calibration score falls below the split quantile, at a random split position (`quantile_move`): what one
    # crossing item moves a set-size difference by
    move: dict[str, float] = field(default_factory=dict)
    # per score: whether its sets can hold the gold option of an item whose true-label score lies beyond the quantile
    # (APS and RAPS include the option that crosses q-hat; LAC and the randomised scores cannot): coverage is then not
    # pinned near k / (n_cal + 1) by re-calibration, and a coverage difference rests on the items whose coverage
    # differs between the two models (`floor[<score>.coverage]`), a rare count when both cover nearly every item
    unpinned: dict[str, bool] = field(default_factory=dict)


def paired_draws(base: ItemView, cand: ItemView, scores: Sequence[str] = ("lac",), n_boot: int = N_BOOT,
                 seed: int = 0, weights: np.ndarray | None = None, tau: float | None = None,
                 smooth: bool = True, set_pairs: bool = True) -> Draws:
    """Plug-in values and paired bootstrap replicates of every metric for both views and their pair metrics.

    `weights` (rows of per-item weights) replaces the bootstrap counts, e.g. `np.ones((1, n))` for the plug-in
    alone (the population value of a simulation); `tau` overrides the quantile level (a population's value at the
    level a sample of another size targets). `set_pairs=False` skips the item-by-item set diagnostics (churn,
    Jaccard, newly confidently wrong), which no gate limit reads: about half the cost of a score."""
    memo = (base.cache_key, cand.cache_key, tuple(scores), n_boot, seed) if (
        weights is None and tau is None and smooth and base.cache_key and cand.cache_key) else None
    if memo is not None and memo in _DRAWS:
        return _DRAWS[memo]  # e.g. the thresholds table re-using the decoupling table's comparison
    if memo is not None and not set_pairs and memo + ("no set pairs",) in _DRAWS:
        return _DRAWS[memo + ("no set pairs",)]
    out = _paired_draws(base, cand, scores, n_boot, seed, weights, tau, smooth, set_pairs)
    if memo is not None and not set_pairs:
        memo = memo + ("no set pairs",)
    if memo is not None:
        _DRAWS[memo] = out
        while len(_DRAWS) > 256:
            _DRAWS.popitem(last=False)
    return out


_DRAWS: OrderedDict[tuple, "Draws"] = OrderedDict()


@lru_cache(maxsize=4)
def _boot_counts_t(n: int, n_boot: int, seed: int) -> np.ndarray:
    out = np.ascontiguousarray(boot_counts(n, n_boot, seed).T, dtype=np.float32)  # counts: exact in float32
    out.setflags(write=False)
    return out


_COMMON: OrderedDict[tuple, tuple] = OrderedDict()


def _common_sums(base: ItemView, cand: ItemView, w: np.ndarray, memo: tuple | None) -> tuple:
    """(per-view weighted sums of the item value columns, weighted sums of the score-independent pair columns):
    the part of a comparison that does not depend on the conformal score (memoised: the gate compares one score at
    a time)."""
    if memo is not None and memo in _COMMON:
        return _COMMON[memo]
    sums = [w @ view.values for view in (base, cand)]  # columns: acc, brier, nll, entropy, idk, nota, ECE gaps
    pb, pc = np.exp(base.logp), cand.logp
    kl = (pb * (base.logp - pc)).sum(axis=1)
    cb, cc = base.top == base.labels, cand.top == cand.labels
    pv = np.column_stack([cb & ~cc, ~cb & cc, base.top == cand.top, kl]).astype(np.float64)
    out = (sums, w @ pv)
    if memo is not None:
        _COMMON[memo] = out
        while len(_COMMON) > 8:
            _COMMON.popitem(last=False)
    return out


def quantile_crossing(pb: "ScorePrep", pc: "ScorePrep", tau: float, h: np.ndarray | None) -> float:
    """Expected number of sample items that lie on different sides of the two models' split quantiles: an item of
    rank r_b among the baseline's true-label scores and r_c among the candidate's is inside one model's q-hat and
    outside the other's when the split position falls between them, probability |H[r_c - 1] - H[r_b - 1]| (`h` the
    split-position CDF; None: the full-sample quantile, a 0/1 count). These items carry the quantile part of a
    set-size difference (each moves it by about dS/dtau / n options), so its variance rests on a count of about this
    size even when many items' own sets differ."""
    n = len(pb.cal)
    ranks = []
    for p in (pb, pc):
        r = np.empty(n, dtype=np.int64)
        r[p.order] = np.arange(1, n + 1)
        ranks.append(r)
    if h is None:
        pos = [int(_quantile_positions(np.ones((1, n)), p.order, tau)[0]) + 1 for p in (pb, pc)]
        return float(np.count_nonzero((ranks[0] <= pos[0]) != (ranks[1] <= pos[1])))
    return float(np.abs(h[ranks[1] - 1] - h[ranks[0] - 1]).sum())


# true-label scores (probability masses) closer than this count as the same score: float32 logits carry ~7
# significant digits, so the same model's logits re-exported or shifted by a constant differ by ~1e-8 here
SAME_SCORE = 1e-6


def quantile_move(prep: ScorePrep, h: np.ndarray) -> float:
    """Expected change of the mean set size (options) when the split quantile moves up by one calibration score, at
    a random split position: an option whose threshold has L sample true-label scores below it is in the set with
    probability 1 - H[L] (`_smoothed_sums`); one more score below it makes that 1 - H[L + 1], a change of
    P(pos = L + 1). Summed over every (item, option) and divided by n: dS/dtau / n, what one item that lies on
    different sides of two models' split quantiles moves a set-size difference by."""
    n = len(prep.cal)
    L = prep.positions("size")
    pmf = np.diff(h)  # pmf[m] = P(pos = m + 1)
    return float(pmf[np.clip(L, 0, n - 1)][L < n].sum()) / n


def _paired_draws(base: ItemView, cand: ItemView, scores: Sequence[str], n_boot: int, seed: int,
                  weights: np.ndarray | None, tau: float | None, smooth: bool, set_pairs: bool = True) -> Draws:
    if base.ids != cand.ids:
        raise CpbenchError("the two artifacts hold different item ids: item-level pairing needs the same items")
    if not np.array_equal(base.labels, cand.labels):
        raise CpbenchError("the two artifacts disagree on gold labels: not the same items")
    if base.k != cand.k:
        raise CpbenchError(f"the two artifacts have different option counts ({base.k} vs {cand.k})")
    n, K = base.n, base.k
    w = boot_counts(n, n_boot, seed) if weights is None else np.asarray(weights, dtype=np.float64)
    tot = w.sum(axis=1)
    out_b: dict[str, np.ndarray] = {}
    out_c: dict[str, np.ndarray] = {}
    pair: dict[str, np.ndarray] = {}
    floor: dict[str, tuple[float, int]] = {}
    item_d: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    tail: dict[str, int] = {}
    crossing: dict[str, float] = {}
    move: dict[str, float] = {}
    unpinned: dict[str, bool] = {}
    common_memo = (base.cache_key, cand.cache_key, n_boot, seed) if (
        weights is None and base.cache_key and cand.cache_key) else None
    all_sums, psums = _common_sums(base, cand, w, common_memo)
    for view, out, sums in ((base, out_b, all_sums[0]), (cand, out_c, all_sums[1])):
        for j, name in enumerate(("acc", "brier", "nll", "entropy", "idk_rate", "nota_rate")):
            out[name] = sums[:, j] / tot
        out["ece"] = np.abs(sums[:, view.n_value_cols:]).sum(axis=1) / tot
    # pair metrics that do not depend on sets
    for j, name in enumerate(PAIR_METRICS):
        pair[name] = psums[:, j] / tot
    population = tau is not None
    tau = base.tau() if tau is None else float(tau)
    rows = np.arange(n)
    top1 = base.empty == "top1"
    # set size, coverage and UAcc are smoothed over where a random split puts q-hat (what the records average) for
    # sample analyses; a population value (tau given) and the top-1 fallback protocol use the plain quantile
    smooth_split = smooth and not population and not top1
    if smooth_split:
        wT = _boot_counts_t(n, n_boot, seed) if weights is None else _transposed(w)
        n_cal = calibration_size(n, base.cal_ratio)
        h = split_position_cdf(n, n_cal, order_statistic(n_cal, float(base.alpha), base.quantile_rule))
    for s in scores:
        preps = (base.score(s), cand.score(s))
        tail[s] = min(int((p.cal > p.cal_sorted[_quantile_positions(w[:1], p.order, tau)[0]]).sum()) for p in preps)
        crossing[s] = quantile_crossing(preps[0], preps[1], tau, h if smooth_split else None)
        # coverage is pinned by calibration when the gold option is in the set exactly when its calibration score is
        # within q-hat (its membership threshold is its score: LAC, aps_rand, raps_rand)
        unpinned[s] = any(bool(np.any(p.thresholds("coverage") < p.cal - SAME_SCORE)) for p in preps)
        if smooth_split and float(np.max(np.abs(preps[0].cal - preps[1].cal), initial=0.0)) > SAME_SCORE:
            # no crossing floor where the two models give every sample item the same true-label score up to float32
            # rounding (the same model, e.g. a lossless re-export): no item lies on different sides of the quantiles
            move[s] = 0.5 * (quantile_move(preps[0], h) + quantile_move(preps[1], h))
        if smooth_split and not set_pairs:
            # only what the gate reads: smoothed set size and coverage per replicate, and each item's own set size
            # and coverage at the full-sample quantile (floors and the score-type set-size test)
            own = []
            for out, p in zip((out_b, out_c), preps):
                size = _smoothed_sums(w, p, "size", h, wT) / tot
                out[f"{s}.set_size"] = size
                out[f"{s}.coverage"] = _smoothed_sums(w, p, "coverage", h, wT) / tot
                out[f"{s}.uacc"] = M.uacc(out["acc"], size, K)
                t0 = p.table.threshold(p.cal_sorted[_quantile_positions(w[:1], p.order, tau)])[0]
                own.append(((p.table.stat <= t0).sum(axis=1).astype(np.float64),
                            (p.label_stat <= t0).astype(np.float64)))
            (nb_i, vb_i), (nc_i, vc_i) = own
            for key, d_i in ((f"{s}.set_size", nc_i - nb_i), (f"{s}.coverage", vc_i - vb_i)):
                floor[key] = (float((d_i**2).sum()), int(np.count_nonzero(d_i)))
            vals, cnt = np.unique(nc_i - nb_i, return_counts=True)
            item_d[f"{s}.set_size"] = (vals.astype(np.float64), cnt.astype(np.float64))
            continue
        thr = [p.table.threshold(p.cal_sorted[_quantile_positions(w, p.order, tau)]) for p in preps]
        # Items whose set is the same under every replicate's threshold (no statistic in (lo, hi]) count through one
        # matrix-vector product; only the others ("active") are compared with each replicate's threshold.
        active = np.zeros(n, dtype=bool)
        for p, t in zip(preps, thr):
            active |= ((p.table.stat > t.min()) & (p.table.stat <= t.max())).any(axis=1)
        act = np.flatnonzero(active)
        rest = (~active).astype(np.float64)
        wa = np.ascontiguousarray(w[:, act])
        per = []  # (const count, const covered, active counts [B, m], active covered [B, m]) per model
        orders = []
        for p, t in zip(preps, thr):
            st = p.table.stat
            order = np.argsort(st, axis=1, kind="stable")  # inclusion order (ties: option index)
            orders.append(order)
            sorted_stat = np.take_along_axis(st, order, axis=1)
            c0 = (st <= t.min()).sum(axis=1)
            v0 = p.label_stat <= t.min()
            ca = _counts(sorted_stat[act], t)
            va = p.label_stat[act][None, :] <= t[:, None]
            if top1:  # an empty set falls back to the top option
                v0 = v0 | ((c0 == 0) & p.covers_fallback)
                c0 = np.maximum(c0, 1)
                va = va | ((ca == 0) & p.covers_fallback[act][None, :])
                ca = np.maximum(ca, 1)
            per.append((c0, v0, ca, va))
        for out, (c0, v0, ca, va), p in zip((out_b, out_c), per, preps):
            if smooth_split:
                # what the records average over splits: q-hat at a random split position, not one fixed quantile
                size = _smoothed_sums(w, p, "size", h, wT) / tot
                cov = _smoothed_sums(w, p, "coverage", h, wT) / tot
            else:
                size = (w @ (c0 * rest) + _rowdot(wa, ca)) / tot
                cov = (w @ (v0 * rest) + _rowdot(wa, va)) / tot
            out[f"{s}.set_size"] = size
            out[f"{s}.coverage"] = cov
            out[f"{s}.uacc"] = M.uacc(out["acc"], size, K)
        (cb0, vb0, cba, vba), (cc0, vc0, cca, vca) = per
        # each item's own set size and coverage difference at the full-sample (row 0) quantiles
        nb_i, nc_i = cb0.astype(np.float64), cc0.astype(np.float64)
        vb_i, vc_i = vb0.astype(np.float64), vc0.astype(np.float64)
        if len(act):
            nb_i[act], nc_i[act], vb_i[act], vc_i[act] = cba[0], cca[0], vba[0], vca[0]
        for key, d_i in ((f"{s}.set_size", nc_i - nb_i), (f"{s}.coverage", vc_i - vb_i)):
            floor[key] = (float((d_i**2).sum()), int(np.count_nonzero(d_i)))
        vals, cnt = np.unique(nc_i - nb_i, return_counts=True)
        item_d[f"{s}.set_size"] = (vals.astype(np.float64), cnt.astype(np.float64))
        ov = _overlaps(orders[0], orders[1])  # [n, K+1, K+1]
        inter0 = ov[rows, cb0, cc0].astype(np.float64)  # noqa: the active rows are overwritten per replicate
        union0 = cb0 + cc0 - inter0
        churn0 = ~((cb0 == cc0) & (inter0 == cb0))
        jac0 = np.where(union0 > 0, inter0 / np.maximum(union0, 1), 1.0)
        ncw0 = (cc0 == 1) & ~vc0 & vb0
        csum = w @ (np.column_stack([churn0, jac0, ncw0]).astype(np.float64) * rest[:, None])
        flat = ov[act].reshape(len(act), (K + 1) ** 2)
        inter_a = np.take_along_axis(flat.T, cba.astype(np.int64) * (K + 1) + cca, axis=0) if len(act) else cba
        inter_a = inter_a.astype(np.float64)
        union_a = cba.astype(np.float64) + cca - inter_a
        churn_a = ~((cba == cca) & (inter_a == cba))
        jac_a = np.where(union_a > 0, inter_a / np.maximum(union_a, 1), 1.0)
        ncw_a = (cca == 1) & ~vca & vba
        pair[f"{s}.churn"] = (csum[:, 0] + _rowdot(wa, churn_a)) / tot
        pair[f"{s}.jaccard"] = (csum[:, 1] + _rowdot(wa, jac_a)) / tot
        pair[f"{s}.newly_wrong"] = (csum[:, 2] + _rowdot(wa, ncw_a)) / tot
        jac_i = jac0.astype(np.float64)
        if len(act):
            jac_i[act] = jac_a[0]
        floor[f"{s}.jaccard"] = (float(((1.0 - jac_i) ** 2).sum()), int(np.count_nonzero(jac_i < 1.0)))
    return Draws(out_b, out_c, pair, n, w.shape[0] - 1, floor, item_d, tail, crossing, move, unpinned)


# ------------------------------------------------------------------------------------------------- estimates
Method = Literal["normal", "wilson", "binomial", "paired", "tilted", "lognormal"]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its standard errors and how its interval is formed.

    `se_item` is the item-sampling part (paired bootstrap, never below the floor noted in `note`), `se_split` the split
    Monte Carlo part (spread of the S per-split paired values / sqrt(S)); `se` combines them. `split_lo`/`split_hi`
    keep the split-to-split 95% percentile range, labelled as what it is (it does not cover item sampling).
    `lo_limit`/`hi_limit` are the range the quantity can take (a bounded metric's bounds are kept inside it)."""

    metric: str
    point: float
    se: float
    se_item: float = math.nan
    se_split: float = 0.0
    n: int = 0
    method: Method = "normal"
    level: float = LEVEL
    note: str = ""
    split_lo: float = math.nan
    split_hi: float = math.nan
    lo_limit: float = -math.inf
    hi_limit: float = math.inf
    # item-level bootstrap replicates of the estimate (rows 1..B of the shared bootstrap counts): comparisons of the
    # same items resample them identically, so replicates of several models' deltas give their joint distribution
    reps: np.ndarray | None = field(default=None, compare=False, repr=False)
    cap_n_eff: bool = True  # Wilson: effective sample size at most n
    # method "paired" (a difference of paired proportions, e.g. accuracy): (share of items the candidate gains, share
    # it loses); tests and bounds use the score statistic with the variance under the null (Tango 1998)
    discordant: tuple[float, float] | None = None
    # method "tilted": the items' own differences at the full-sample quantiles, as (distinct values, counts); tests and
    # bounds scale the item-level variance by the per-item variance under the null (these values exponentially
    # tilted to mean delta, as empirical likelihood does) over their sample variance: a variance function of delta,
    # which keeps the one-sided level where the sample's own spread is smallest exactly when its estimate is furthest
    # from the truth (a score-type test, like Wilson's for a proportion)
    item_d: tuple[np.ndarray, np.ndarray] | None = field(default=None, compare=False, repr=False)
    # a set-based item-by-item proportion (set churn, newly confidently wrong): its bounds also reach the bootstrap
    # replicates' percentile bounds (`reps`, q-hat recomputed in every replicate). The plug-in jumps when q-hat moves
    # past an atom of tied true-label scores (real bf16 logits: one pair's candidate APS quantile sits on 178 scores
    # of exactly 1.0, and a sample whose q-hat falls below them shows 2-5 items with unchanged sets where the
    # population shows 0.4 %); a Wilson interval from the replicates' se assumes a smooth binomial count and misses
    # the jump, the replicates themselves show it (docs/conformal.md, "Set churn on an atom of tied scores"). Also set
    # Jaccard (normal interval with its floor): a monotone, saturating function of q-hat's position, skewed where the
    # normal interval is symmetric (`estimates`).
    boot_hull: bool = False
    # method "wilson", the candidate's own coverage: each bound the farther of Wilson's and the normal (Wald) one. The
    # coverage estimate's variance falls toward 1 more slowly than p(1 - p) (real A, APS, n = 300: effective sample
    # size p(1 - p) / se^2 287 in the lowest fifth of estimates, 120 in the highest), so Wilson's end toward 1 is too
    # close (its upper end missed in 7-8 % of samples) while a normal interval's end away from 1 misses where the
    # highest estimates show the smallest spread; a variance function between the two models (constant, binomial)
    # keeps both ends (docs/conformal.md, "... the candidate's coverage near 1")
    wald_hull: bool = False

    def negated(self, metric: str | None = None) -> "Estimate":
        """The estimate of minus the quantity (e.g. an accuracy drop from an accuracy difference)."""
        return self.replace(metric=metric or self.metric, point=-self.point, split_lo=-self.split_hi,
                            split_hi=-self.split_lo, lo_limit=-self.hi_limit, hi_limit=-self.lo_limit,
                            reps=None if self.reps is None else -self.reps,
                            item_d=None if self.item_d is None else (-self.item_d[0], self.item_d[1]),
                            discordant=None if self.discordant is None else self.discordant[::-1])

    def _null_sd(self, delta: float) -> float:
        """sd of the estimate if the true difference were `delta` (Tango's restricted maximum likelihood for paired
        proportions: P(gain) = q + delta, P(loss) = q), plus the split term."""
        gain, loss = self.discordant
        n = float(self.n)
        if delta < 0:
            gain, loss, delta = loss, gain, -delta
        x, y = gain * n, loss * n
        m = n - x - y
        b = x * (1 - delta) + y * (1 - 3 * delta) - 2 * m * delta
        q = (b + math.sqrt(max(b * b + 8 * n * y * delta * (1 - delta), 0.0))) / (4 * n)
        var = max(2 * q + delta - delta * delta, 0.0) / n
        return math.sqrt(var + self.se_split**2)

    def _tilted_sd(self, delta: float) -> float:
        # beyond 4 se from the estimate the variance is held at its value there, so the statistic keeps growing and
        # every bound is finite (a far delta would otherwise carry a variance growing like delta^2 when the items'
        # own differences explain little of the se, and the test could never reject it)
        reach = 4.0 * self.se
        delta = min(max(delta, self.point - reach), self.point + reach)
        vals, cnt = self.item_d
        tot = float(cnt.sum())
        p = [float(c) / tot for c in cnt]
        v = [float(x) for x in vals]
        mean = sum(pi * vi for pi, vi in zip(p, v))
        v0 = sum(pi * (vi - mean) ** 2 for pi, vi in zip(p, v))
        x = [vi - (mean - float(self.point)) - delta for vi in v]  # values centred on the point, minus delta
        if v0 <= 0:
            vt = v0
        elif not (min(x) < 0 < max(x)):
            vt = sum(pi * xi * xi for pi, xi in zip(p, x))  # no tilt reaches delta: the second moment about it
        else:
            lo_l, hi_l = -1.0 / max(x) + 1e-12, -1.0 / min(x) - 1e-12
            lam = 0.0
            for _ in range(100):  # sum p x / (1 + lam x) = 0: safeguarded Newton (g decreases in lam)
                g = sum(pi * xi / (1 + lam * xi) for pi, xi in zip(p, x))
                if abs(g) < 1e-13:
                    break
                if g > 0:
                    lo_l = lam
                else:
                    hi_l = lam
                dg = -sum(pi * xi * xi / (1 + lam * xi) ** 2 for pi, xi in zip(p, x))
                step = lam - g / dg if dg < 0 else 0.5 * (lo_l + hi_l)
                lam = step if lo_l < step < hi_l else 0.5 * (lo_l + hi_l)
            w = [pi / (1.0 + lam * xi) for pi, xi in zip(p, x)]
            sw = sum(w)
            vt = sum(wi * xi * xi for wi, xi in zip(w, x)) / sw
        # the item-level variance scales with the per-item variance under the null (the quantile's part moves with
        # it: a sample whose sets came out small shows a small spread of both)
        ratio = vt / v0 if v0 > 0 else 1.0
        return math.sqrt(self.se_item**2 * max(ratio, 0.0) + self.se_split**2)

    def _paired_bound(self, side: str, z: float) -> float:
        """The delta at which the score statistic (point - delta) / sd(delta) equals z (lower) or -z (upper)."""
        lo, hi = (self.lo_limit if math.isfinite(self.lo_limit) else -1.0), self.point
        if side == "upper":
            lo, hi = self.point, (self.hi_limit if math.isfinite(self.hi_limit) else 1.0)
        sdf = self._null_sd if self.method == "paired" else self._tilted_sd
        f = (lambda d: (self.point - d) / max(sdf(d), 1e-15) - z) if side == "lower" else (
            lambda d: (self.point - d) / max(sdf(d), 1e-15) + z)
        if side == "lower" and f(lo) <= 0:
            return lo
        if side == "upper" and f(hi) >= 0:
            return hi
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if f(mid) > 0:  # f decreases in delta on both sides
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)
    @property
    def ok(self) -> bool:
        return math.isfinite(self.point) and math.isfinite(self.se)

    def _count(self) -> tuple[int, int]:
        """(k, n) of a share of all items: the point is k / n."""
        n = int(self.n)
        return min(max(round(self.point * n), 0), n), n

    def _n_eff(self) -> float:
        p = min(max(self.point, 0.0), 1.0)
        if self.se > 0 and 0 < p < 1:
            return min(float(self.n), p * (1 - p) / self.se**2) if self.n and self.cap_n_eff else p * (
                1 - p) / self.se**2
        return float(self.n or 1)

    def bound(self, side: Literal["lower", "upper"], level_one_sided: float) -> float:
        """One-sided confidence bound at `level_one_sided`, inside [lo_limit, hi_limit] (and never on the wrong side
        of the point estimate)."""
        if not self.ok:
            return math.nan
        z = z_of(level_one_sided)
        if self.method == "binomial" and self.n > 0:  # a count of items: Clopper-Pearson, exact
            k, n = self._count()
            b = binomial.lower(k, n, level_one_sided) if side == "lower" else binomial.upper(k, n, level_one_sided)
        elif self.method == "wilson":
            lo, hi = wilson(self.point, self._n_eff(), z)
            if self.wald_hull:
                lo, hi = min(lo, self.point - z * self.se), max(hi, self.point + z * self.se)
            b = lo if side == "lower" else hi
        elif self.method == "paired" and self.discordant is not None and self.n > 0:
            b = self._paired_bound(side, z)
        elif self.method == "lognormal" and self.point > 0:
            r = math.exp(z * self.se / self.point)
            b = self.point / r if side == "lower" else self.point * r
        elif self.method == "tilted" and self.item_d is not None:
            lim = (self.point - 20 * self.se - 1, self.point + 20 * self.se + 1)
            b = self.replace(lo_limit=max(self.lo_limit, lim[0]), hi_limit=min(self.hi_limit, lim[1]))._paired_bound(
                side, z)
        else:
            b = self.point - z * self.se if side == "lower" else self.point + z * self.se
        if self.boot_hull and self.reps is not None and len(self.reps):
            q = float(np.quantile(self.reps, 1.0 - level_one_sided if side == "lower" else level_one_sided))
            b = min(b, q) if side == "lower" else max(b, q)
        b = min(max(b, self.lo_limit), self.hi_limit)
        return min(b, self.point) if side == "lower" else max(b, self.point)

    @property
    def lo(self) -> float:
        return self.bound("lower", 0.5 + self.level / 2)

    @property
    def hi(self) -> float:
        return self.bound("upper", 0.5 + self.level / 2)

    def p_below(self, margin: float) -> float:
        """One-sided p-value for H0: theta >= margin (small when the estimate is clearly below the margin)."""
        if not self.ok:
            return math.nan
        if self.method == "binomial" and self.n > 0:  # the exact tail at the margin (the null's nearest point)
            return binomial.cdf(*self._count(), margin)
        if self.method == "wilson":
            m = min(max(margin, 1e-12), 1 - 1e-12)
            sd = math.sqrt(m * (1 - m) / self._n_eff())
        elif self.method == "paired" and self.discordant is not None and self.n > 0:
            sd = self._null_sd(min(max(margin, -1.0 + 1e-12), 1.0 - 1e-12))
        elif self.method == "tilted" and self.item_d is not None:
            sd = self._tilted_sd(margin)
        elif self.method == "lognormal" and self.point > 0:
            if margin <= 0:
                return 1.0
            return _NORMAL.cdf((math.log(self.point) - math.log(margin)) / (self.se / self.point))
        else:
            sd = self.se
        if sd <= 0:
            p = 0.0 if self.point < margin else 1.0
        else:
            p = _NORMAL.cdf((self.point - margin) / sd)
        if self.boot_hull and self.reps is not None and len(self.reps):
            p = max(p, float(np.mean(self.reps >= margin)))  # as the upper bound: the replicates' own share
        if self.wald_hull and self.method == "wilson" and self.se > 0:
            p = max(p, _NORMAL.cdf((self.point - margin) / self.se))  # as the upper bound: Wilson's or Wald's
        return p

    def p_above(self, margin: float) -> float:
        """One-sided p-value for H0: theta <= margin."""
        if self.method == "binomial" and self.n > 0 and self.ok:
            k, n = self._count()
            return binomial.sf(k, n, margin)
        if self.boot_hull and self.reps is not None and len(self.reps) and self.ok:
            return max(self.replace(boot_hull=False).p_above(margin), float(np.mean(self.reps <= margin)))
        if self.wald_hull and self.method == "wilson" and self.ok and self.se > 0:
            return max(self.replace(wald_hull=False).p_above(margin), _NORMAL.cdf((margin - self.point) / self.se))
        p = self.p_below(margin)
        return p if math.isnan(p) else 1.0 - p

    def items_to_decide(self, margin: float, level_one_sided: float, power: float = 0.8) -> float:
        """Items (in all) that would decide against `margin` with probability `power` if the estimate is the truth,
        from this cell's own per-item variance: n * ((z_level + z_power) * se / |estimate - margin|)^2 (se * sqrt(n)
        is the per-item standard deviation; both the item and the split terms shrink as 1 / sqrt(n))."""
        gap = abs(self.point - margin)
        if not self.ok or self.n <= 0:
            return math.nan
        if gap == 0 or self.se == 0:
            return math.inf if gap == 0 else float(self.n)
        return float(self.n) * ((z_of(level_one_sided) + z_of(power)) * self.se / gap) ** 2

    def replace(self, **kw) -> "Estimate":
        from dataclasses import replace as _replace

        return _replace(self, **kw)


def wilson(p: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval for a proportion p from n (possibly effective, non-integer) trials."""
    p = min(max(p, 0.0), 1.0)
    n = max(n, 1e-9)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _sd(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else math.nan


def split_se(cand_ps: np.ndarray | None, base_ps: np.ndarray | None) -> tuple[float, float, float]:
    """(se of the mean of S paired per-split differences, split 2.5%, 97.5% percentiles of the mean difference)."""
    if cand_ps is None or base_ps is None or len(cand_ps) != len(base_ps) or len(cand_ps) < 2:
        return math.nan, math.nan, math.nan
    d = np.asarray(cand_ps, dtype=float) - np.asarray(base_ps, dtype=float)
    lo, hi = np.percentile(d, [2.5, 97.5])
    return _sd(d) / math.sqrt(len(d)), float(lo), float(hi)


def _paired_proportion_se(draws: Draws) -> float:
    """Floor for the standard error of an accuracy difference: Agresti & Min's (2005) adjusted Wald for paired
    proportions (0.5 added to every cell of the 2x2 correct/wrong table). Without it, two models that agree on every
    sampled item get a bootstrap interval of exactly [0, 0], and 27 items would "show" accuracy equivalence within
    0.01; with many discordant items the floor is below the bootstrap's own spread and changes nothing."""
    if "flip_cw" not in draws.pair or "flip_wc" not in draws.pair or draws.n < 1:
        return 0.0
    n = float(draws.n)
    b, c = float(draws.pair["flip_cw"][0]) * n, float(draws.pair["flip_wc"][0]) * n
    p10, p01 = (b + 0.5) / (n + 2), (c + 0.5) / (n + 2)
    return math.sqrt(max(p10 + p01 - (p10 - p01) ** 2, 0.0) / (n + 2))


FLOOR_Z = 1.959963984540054  # z_0.975: the floor's pseudo-count, z^2 (a zero count's Wilson upper end, z^2 / n)
_RANGES = {"acc": (-1.0, 1.0), "coverage": (-1.0, 1.0), "ece": (-1.0, 1.0), "brier": (-2.0, 2.0),
           "idk_rate": (-1.0, 1.0), "nota_rate": (-1.0, 1.0), "jaccard": (0.0, 1.0), "kl": (0.0, math.inf)}


def t_quantile(p: float, df: float) -> float:
    """Student t quantile (numpy only): exact for 1 and 2 degrees of freedom, else the Cornish-Fisher expansion
    (Abramowitz & Stegun 26.7.5; error < 1e-3 at df >= 3)."""
    if not math.isfinite(df) or df > 1e6:
        return z_of(p)
    if df <= 1:
        return math.tan(math.pi * (p - 0.5))
    if df <= 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = z_of(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def t_factor(df: float, level: float = LEVEL) -> float:
    """t_{df} / z at the two-sided `level`: the scale that studentises a normal interval by a variance estimated with
    `df` degrees of freedom."""
    p = 0.5 + level / 2
    return t_quantile(p, df) / z_of(p)


def crossing_df(c: float) -> float:
    """Degrees of freedom of a set-size difference's item-level variance when it rests on c items that cross the
    split quantiles (`quantile_crossing`): the variance is about a count of c times a fixed square (one item's move of
    the quantile), a Poisson-like count whose estimate has relative variance 1 / c; a chi-square variance estimate
    with nu df has 2 / nu, so nu = 2c (Satterthwaite's moment match; at least 2)."""
    return max(2.0 * float(c), 2.0)


def tail_factor(m: int, level: float = LEVEL) -> float:
    """Small-sample scale for a set-based metric's item-level se: t_{m-1} / z at the interval's level, m the number
    of sample items beyond the conformal quantile (Draws.tail). The quantile, and with it every set size and coverage
    of the split procedure, rests on those m items; a variance estimated from m effective observations is
    studentised with m - 1 degrees of freedom (at least 2). 1.15 at n = 100 (m ~ 10), 1.04 at 300, 1.01 at 1,000."""
    return t_factor(max(float(m) - 1.0, 2.0), level)


CROSSING_PSEUDO = 0.5  # Jeffreys' half count: a zero count's posterior mean under the Jeffreys prior is 1/2


def crossing_floor(draws: Draws, score: str) -> float:
    """Floor of a set-size difference's item-level se: half a crossing item, sqrt(1/2) x one crossing's move
    (`Draws.move`). The quantile part of a set-size difference is a Poisson-like sum over the items that lie on
    different sides of the two models' split quantiles, each moving it by one rank's move of the mean set size
    (`quantile_move`), so its variance is about C moves squared (the model `crossing_df` studentises by; on real pairs
    the bootstrap se is about sqrt(C) moves). A sample that holds no crossing item although the population has some
    (a candidate that ranks nearly every item as the baseline does, whose rare crossing items, e.g. a gold option
    overtaking a near-tied one, carry the whole quantile part) shows a bootstrap se near 0; the floor is the variance
    of the zero count's Jeffreys half count (as the other zero-count floors: no sample can claim less than that). It
    is a fixed number of moves, so it shrinks like 1 / n, faster than the se (1 / sqrt(n)): it binds only where the
    sample shows (almost) no crossing item."""
    if score not in draws.move or draws.n < 1:
        return 0.0
    return math.sqrt(CROSSING_PSEUDO) * draws.move[score]


def _floor(draws: Draws, key: str) -> tuple[float, int]:
    """(floor of the item-level se, number of items whose own value differs) for a set-based metric.

    With d_i each item's own difference at the full-sample quantiles (options of the set; 1 - Jaccard), the floor is
    sqrt(sum d_i^2 + z^2) / n: the second moment with a pseudo-count of z^2 (z = 1.96) in the way Wilson's interval
    adds z^2 / 2 successes and failures. With no differing item it is z / n (an interval of +-z^2 / n, a zero count's
    Wilson upper end); with many it is the fixed-quantile per-item spread, below the bootstrap's in practice. It
    replaces the bootstrap spread only when it is larger: when few items' sets differ, a bootstrap of a rare count
    is too narrow (or exactly [0, 0]) in the samples where the count came out low."""
    if key not in draws.floor or draws.n < 1:
        return 0.0, -1
    ss, m = draws.floor[key]
    return math.sqrt(ss + FLOOR_Z**2) / draws.n, m


def estimates(draws: Draws, *, level: float = LEVEL, record_points: dict[str, float] | None = None,
              split_ses: dict[str, float] | None = None, k_options: int | None = None) -> dict[str, Estimate]:
    """Estimates of every delta (candidate - baseline: `d_<metric>` / `d_<score>.<metric>`), pair metric, and the
    candidate's own coverage (`cand.<score>.coverage`, what `--min-coverage` limits).

    `record_points` replaces the plug-in point by the record's split-averaged value (then `split_ses` must give the
    split Monte Carlo standard error of that mean, else the point is the plug-in and has no split term); keys as the
    estimates' names.

    Coverage has an item-level term like set size: a split's coverage is k / (n_cal + 1) in expectation only for
    untied scores whose set is {j : s(x, j) <= q-hat}; APS and RAPS include the option that crosses q-hat, and tied
    scores put mass at q-hat, so a model's coverage exceeds k / (n_cal + 1) by a model-dependent, item-dependent
    amount. It is bootstrapped the way set size is (q-hat smoothed over split positions inside every replicate)."""
    record_points = record_points or {}
    split_ses = split_ses or {}
    corr = math.sqrt(draws.n / max(draws.n - 1, 1))  # bootstrap variance is (n-1)/n of the unbiased one
    K = int(k_options) if k_options else None
    out: dict[str, Estimate] = {}

    def finish(key: str, plug: float, se_item: float, note: str, lo_hi: tuple[float, float],
               reps: np.ndarray | None = None) -> None:
        point, se_split = plug, 0.0
        if key in record_points and math.isfinite(record_points[key]):
            ss = split_ses.get(key, math.nan)
            if math.isfinite(ss):
                point, se_split, note = float(record_points[key]), ss, note.replace(
                    "plug-in (full-sample quantile)", "record mean over splits")
        se = math.sqrt(se_item**2 + se_split**2)
        out[key] = Estimate(key, point, se, se_item, se_split, draws.n, "normal", level, note, lo_limit=lo_hi[0],
                            hi_limit=lo_hi[1], reps=reps)

    floors: dict[str, float] = {}
    for name in draws.base:
        d = draws.cand[name] - draws.base[name]
        se_item = _sd(d[1:]) * corr
        key = f"d_{name}"
        short = name.split(".")[-1]
        notes = ["plug-in (full-sample quantile)"]
        if name == "acc":
            se_item = max(se_item, _paired_proportion_se(draws))
        sname = name.split(".")[0]
        tf = tail_factor(draws.tail[sname], level) if short in SCORE_METRICS and sname in draws.tail else 1.0
        why = f"{max(draws.tail.get(sname, 0) - 1, 2)} df: items beyond the quantile"
        if short == "set_size" and sname in draws.crossing and sname in draws.tail:
            df = crossing_df(draws.crossing[sname])
            if df < max(draws.tail[sname] - 1.0, 2.0):
                tf = t_factor(df, level)
                why = (f"{df:.1f} df: twice the {draws.crossing[sname]:.1f} items on different sides of the two "
                       "split quantiles")
        tf_own, why_own = tf, why  # the candidate's own coverage keeps the tail factor (Wilson's variance function)
        if short == "coverage" and draws.unpinned.get(sname) and name in draws.floor and sname in draws.tail:
            # APS / RAPS coverage is not pinned by re-calibration: near coverage 1 a difference rests on the few
            # items whose coverage differs between the two models (m, a rare, Poisson-like count: a Gemma pair's base
            # covers every item, its Wanda candidate misses ~1 % of items, i.e. m ~ 1 at n = 100 and m = 0 in 43 % of
            # samples). A bootstrap variance from m such items is studentised with 2m df (`crossing_df`), and a sample
            # that holds none shows only the split smoothing's spread (se ~0.002 there): floored, before the
            # studentisation, at half an item (Jeffreys' half count), as the crossing floor of set size
            # (docs/conformal.md, "APS Δcoverage when few items' coverage differs")
            m_diff = int(draws.floor[name][1])
            df = crossing_df(m_diff)
            if df < max(draws.tail[sname] - 1.0, 2.0):
                tf = t_factor(df, level)
                why = f"{df:.0f} df: twice the {m_diff} items whose coverage differs between the two models"
            half = math.sqrt(CROSSING_PSEUDO) / draws.n
            if half > se_item:
                se_item = half
                notes.append(f"se at its discordance floor sqrt(1/2) / n (half an item whose coverage differs; the "
                             f"sample shows {m_diff})")
        cross = crossing_floor(draws, sname) if short == "set_size" else 0.0
        if cross > se_item:
            # a variance estimate like the bootstrap's (a count of crossing items, half of one): studentised alike
            se_item = cross
            notes.append(f"se at its crossing floor sqrt(1/2) x {draws.move[sname]:.3g} options (half an item on "
                         f"different sides of the two split quantiles; the sample shows {draws.crossing[sname]:.1f})")
        if tf > 1.0:
            se_item *= tf
            notes.append(f"se x {tf:.3f} (t, {why})")
        if short in ("set_size", "coverage"):
            fl, m = _floor(draws, name)
            if short == "coverage":
                # no floor from the items' own differences: re-calibration pins each model's coverage near
                # k / (n_cal + 1), so items whose coverage differs at a fixed quantile say little about the spread
                # (their count would be far too wide a floor); measured calibration in docs/conformal.md (APS / RAPS,
                # whose coverage is not pinned: the half-item floor and the 2m-df studentisation above). Only when
                # no replicate moved by half an item (e.g. both models' APS sets hold every option on every sampled
                # item; the split smoothing still moves them by ~1e-9) the
                # zero-count floor z / n: [0, 0] would claim more than n items can show (the population value is
                # then a hair below 0 or above it, -8e-8 on a real pair, and [0, 0] missed it in 30 % of samples)
                moved = float(np.max(np.abs(d[1:] - d[0]))) if len(d) > 1 else 0.0
                fl = FLOOR_Z / draws.n if moved < 0.5 / draws.n else 0.0  # no replicate moved by half an item
                m = 0
            floors[name] = max(fl, cross * tf)  # (ΔUAcc's delta-method floor)
            if fl > se_item:
                se_item = fl
                notes.append(f"se at its floor: {m} of {draws.n} items' sets differ" if short == "set_size" and m >= 0
                             else "se at its zero-count floor z / n: no replicate moved by half an item" if short == "coverage"
                             else "se floored")
        if short == "uacc" and K:
            s_name = name[: -len("uacc")] + "set_size"
            acc_b, size_b = float(draws.base["acc"][0]), float(draws.base[s_name][0])
            if size_b > 0 and s_name in floors:
                g_acc, g_size = math.sqrt(K) / size_b, acc_b * math.sqrt(K) / size_b**2
                fl = math.hypot(g_acc * _paired_proportion_se(draws), g_size * floors[s_name])
                if fl > se_item:
                    se_item = fl
                    notes.append("se at its floor (from the accuracy and set-size floors)")
        lim = _RANGES.get(short, (-math.inf, math.inf))
        if short == "set_size" and K:
            lim = (-float(K), float(K))
        finish(key, float(d[0]), se_item, "; ".join(notes), lim, d[1:])
        if short == "coverage":
            c = draws.cand[name]
            own_notes = notes[:1] + ([f"se x {tf_own:.3f} (t, {why_own})"] if tf_own > 1.0 else [])
            finish(f"cand.{name}", float(c[0]), _sd(c[1:]) * corr * tf_own, "; ".join(own_notes), (0.0, 1.0))
            # a coverage near 1 is a proportion: Wilson's score interval at the effective sample size p(1-p)/se^2
            # (not capped at n: calibration makes coverage less variable than n independent trials). A normal
            # interval undercovers there because the samples with the highest coverage have the smallest spread.
            # Each end is also at least the normal interval's: the estimate's variance falls toward 1 more slowly
            # than Wilson's p(1 - p) (`Estimate.wald_hull`).
            out[f"cand.{name}"] = out[f"cand.{name}"].replace(method="wilson", cap_n_eff=False, wald_hull=True)
    for name, d_i in draws.item_d.items():  # set size: a score-type test and interval (Estimate._tilted_sd)
        if f"d_{name}" in out and len(d_i[0]):
            out[f"d_{name}"] = out[f"d_{name}"].replace(method="tilted", item_d=d_i)
    if "d_acc" in out and "flip_cw" in draws.pair and "flip_wc" in draws.pair:
        # a difference of paired proportions: Tango's score test and interval (the variance under the null), which
        # keeps its level on the side where a Wald interval (the bootstrap's) does not: samples with few discordant
        # items show a small spread exactly when their estimate is furthest from the truth
        out["d_acc"] = out["d_acc"].replace(method="paired", discordant=(
            float(draws.pair["flip_wc"][0]), float(draws.pair["flip_cw"][0])))
    for name, v in draws.pair.items():
        se_item = _sd(v[1:]) * corr
        short = name.split(".")[-1]
        # KL >= 0 is a mean of a skewed positive quantity: its interval on the log scale (delta method)
        # a share of all items (flips, agreement) is a count: the exact binomial (`binomial`); a set-based share
        # (churn, newly confidently wrong) rests on the quantile too, and its se on the bootstrap: Wilson at n_eff
        method: Method = ("wilson" if "." in name else "binomial") if short in PROPORTIONS else (
            "lognormal" if short == "kl" else "normal")
        note = "plug-in (full-sample quantile)" if "." in name else "all items"
        if short == "jaccard":
            fl, m = _floor(draws, name)
            if fl > se_item:
                se_item = fl
                note += f"; se at its floor: {m} of {draws.n} items' sets differ"
        # churn, newly confidently wrong: a jump at q-hat's atoms. Jaccard: its spread is mostly the quantile's
        # position, not the items' own differences (real pair, APS, n = 300: sd of the estimate 0.0148, of the part at
        # fixed quantiles 0.0031), and the mean Jaccard is a monotone, saturating function of that position (the sets
        # stop growing as they fill up): the estimate is skewed toward 0 and its bootstrap se is smallest where q-hat
        # came out high and the estimate furthest above the truth, so a symmetric normal interval missed above (90 %
        # covered). The percentile interval follows a monotone transform of the quantile's position (q-hat is
        # recomputed in every replicate); each end is the farther of it and the normal one with its floor
        # (docs/conformal.md, "Set Jaccard: the interval follows the skew of the quantile's position").
        hull = method == "wilson" or short == "jaccard"
        if hull:
            note += "; interval also holds the bootstrap percentile interval (q-hat per replicate)"
        lim = _RANGES.get(short, (0.0, 1.0) if method == "wilson" else (-math.inf, math.inf))
        out[name] = Estimate(name, float(v[0]), se_item, se_item, 0.0, draws.n, method, level, note,
                             lo_limit=lim[0], hi_limit=lim[1], reps=v[1:] if hull else None, boot_hull=hull)
    return out
