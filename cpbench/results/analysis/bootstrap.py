"""The paired item bootstrap between two artifacts of the same items (numpy only): `paired_draws` gives the plug-in
value and the bootstrap replicates of every metric of both models and of their item-by-item pair metrics (`Draws`).

The item-level term of a record delta's variance (`cpbench.results.analysis.paired`) is estimated by a paired item
bootstrap of the plug-in statistic that re-runs calibration inside every replicate: each replicate resamples the
items with replacement (the same indices for both models), takes the conformal quantile of the resampled true-label
scores at the level the split quantile targets, tau = k / (n_cal + 1) with k the finite-sample order statistic of the
analysis (ceil((n_cal + 1)(1 - alpha)) for the textbook rule), and measures both models on the resampled items.

Diagnostics that compare the two models item by item (flips, agreement, KL, set churn, Jaccard, newly confidently
wrong) are measured on the full sample at the plug-in quantile and bootstrapped in the same replicate loop.

Speed: bootstrap counts are shared by every cell with the same n (common random numbers); the quantile of each
replicate is found in a narrow window of the sorted order, and only the few items whose set changes between
replicates are compared option by option (the same two tricks as `cpbench.results.conformal.engine`).
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
from typing import Sequence

import numpy as np

from cpbench.results.analysis.item_views import ItemView, ScorePrep
from cpbench.results.conformal import metrics as M
from cpbench.results.conformal.quantile import order_statistic
from cpbench.results.conformal.splits import calibration_size
from cpbench.base.errors import CpbenchError

N_BOOT = 300

MODEL_METRICS = ("acc", "brier", "nll", "entropy", "ece", "idk_rate", "nota_rate")  # score-independent
SCORE_METRICS = ("coverage", "set_size", "uacc")  # per conformal score
PAIR_METRICS = ("flip_cw", "flip_wc", "agreement", "kl")  # item by item, score-independent
SET_PAIR_METRICS = ("churn", "jaccard", "newly_wrong")  # item by item, per conformal score


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
