"""Thresholds: does set size inflate smoothly with compression, or bend upward past some bit-width or sparsity?

Set size y is fitted against the compression level t of one knob (t = sparsity in percent, or t = -bits, so t grows
with compression) by two models, on the per-level means:

- linear:  y = b0 + b1 t
- hinge:   y = b0 + b1 t + b2 max(0, t - c)   (continuous piecewise linear, breakpoint c scanned on a fine grid
  between the second and the second-to-last level, so each segment holds at least two levels)

The hinge is preferred only when it wins by the stated criterion:

- `permutation` (default): F = (RSS_linear - RSS_hinge) / RSS_hinge, with the breakpoint re-fitted for every
  permutation of the linear fit's residuals (all permutations when there are at most 8 levels, else `n_perm` seeded
  ones); the hinge wins when p < `alpha` (5 %). Enumerating every permutation removes Monte Carlo error, but the
  test is approximate, not exact: residuals of a fitted line are not exchangeable (Freedman & Lane 1983). Measured
  on linear sweeps with Gaussian noise it rejects close to 5 % (4.7 % on bit sweeps, 5.5 % on sparsity sweeps),
  which BIC does not at six levels (see docs/leaderboards.md for the measured rates).
- `bic`: n ln(RSS/n) + p ln(n) with p = 3 (linear: b0, b1, sigma) and 5 (hinge: + b2, c); lower wins.

A winning hinge is reported as a `threshold` only if the slope after the breakpoint exceeds the slope before it
(uncertainty accelerates); a winning hinge that flattens (saturation near K options) is reported `gradual` with a
note. Reported: threshold level (knob units), slopes before/after (set size per bit removed, or per sparsity point),
and the jump: how far set size at the most compressed level lies above the pre-threshold trend, b2 (t_max - c).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd

from cpbench.results.analysis.knobs import KnobKind, baseline_value, compression_sign, recipe_variant, recorded_knob
from cpbench.base.errors import CpbenchError
from cpbench.results.store import KEY_COLS, merge_notes

Criterion = Literal["permutation", "bic"]
MIN_LEVELS = 5
_EXACT_MAX = 8  # 8! = 40,320 permutations: still fast with the vectorised projections below


@dataclass(frozen=True)
class ThresholdFit:
    kind: str
    n_levels: int
    criterion: str
    verdict: str  # "threshold", "gradual" or "too-few-levels"
    threshold: float  # knob value at the breakpoint (NaN unless verdict is "threshold")
    slope_before: float
    slope_after: float
    jump: float
    linear_slope: float
    breakpoint_fit: float  # best hinge breakpoint whether or not it won
    bic_linear: float
    bic_hinge: float
    p_value: float
    note: str = ""


def _projections(t: np.ndarray, cs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residual makers I - X (X'X)^+ X' for the linear design and for the hinge design at each breakpoint."""
    n = len(t)
    ident = np.eye(n)
    lin = np.column_stack([np.ones(n), t])
    m_lin = ident - lin @ np.linalg.pinv(lin)
    designs = np.stack([np.column_stack([np.ones(n), t, np.maximum(0.0, t - c)]) for c in cs])
    m_hinge = ident[None] - designs @ np.linalg.pinv(designs)
    return m_lin, m_hinge


def _rss(m: np.ndarray, y: np.ndarray) -> np.ndarray:
    r = m @ y
    return (r * r).sum(axis=-2)


def _breakpoints(levels: np.ndarray, per_gap: int = 20) -> np.ndarray:
    inner = levels[1:-1]
    pieces = [np.linspace(a, b, per_gap, endpoint=False) for a, b in itertools.pairwise(inner)]
    return np.unique(np.concatenate([*pieces, inner[-1:]])) if pieces else inner


def fit_threshold(
    knob: np.ndarray,
    set_size: np.ndarray,
    kind: KnobKind,
    *,
    criterion: Criterion = "permutation",
    alpha: float = 0.05,
    n_perm: int = 9999,
    seed: int = 0,
    min_levels: int = MIN_LEVELS,
) -> ThresholdFit:
    """Fit linear and one-breakpoint models of set size against one knob's levels (one point per level)."""
    if criterion not in ("permutation", "bic"):
        raise ValueError(f"criterion must be 'permutation' or 'bic', got {criterion!r}")
    sign = compression_sign(kind)
    t = sign * np.asarray(knob, dtype=float)
    y = np.asarray(set_size, dtype=float)
    order = np.argsort(t, kind="mergesort")
    t, y = t[order], y[order]
    n = len(np.unique(t))
    nan = math.nan
    if n < min_levels or n != len(t):
        note = f"{n} distinct levels (need {min_levels})" if n == len(t) else "repeated knob levels"
        return ThresholdFit(kind, n, criterion, "too-few-levels", nan, nan, nan, nan, nan, nan, nan, nan, nan, note)

    cs = _breakpoints(t)  # fine grid: where the breakpoint lies
    m_lin, m_hinge = _projections(t, cs)
    rss_lin = float(_rss(m_lin, y[:, None])[0])
    rss_h_all = _rss(m_hinge, y[:, None])[:, 0]
    best = int(np.argmin(rss_h_all))
    c = float(cs[best])
    rss_h = float(rss_h_all[best])
    floor = 1e-12 * max(float(((y - y.mean()) ** 2).sum()), 1e-12)  # exact fits must not give log(0)

    def bic(rss: float, p: int) -> float:
        return n * math.log(max(rss, floor) / n) + p * math.log(n)

    bic_lin, bic_h = bic(rss_lin, 3), bic(rss_h, 5)

    p_value = nan
    if criterion == "permutation":
        # The test statistic scans breakpoints at the observed interior levels only (the fine grid above only
        # places the breakpoint); the same statistic is computed for every permutation, so data and permutations
        # are compared alike.
        _, m_test = _projections(t, t[1:-1])
        resid = m_lin @ y
        fitted = y - resid
        if n <= _EXACT_MAX:
            perms = np.array(list(itertools.permutations(range(n)))).T  # (n, n!) incl. the identity
        else:
            rng = np.random.default_rng(seed)
            shuffled = rng.permuted(np.tile(np.arange(n), (n_perm, 1)), axis=1)
            perms = np.column_stack([np.arange(n), shuffled.T])
        ys = fitted[:, None] + resid[perms]
        rl = _rss(m_lin, ys)
        rh = np.full(ys.shape[1], np.inf)
        for m in m_test:  # running minimum over breakpoints: stacking them all would hold C x n x n! floats
            np.minimum(rh, _rss(m, ys), out=rh)
        stats = (rl - rh) / np.maximum(rh, floor)
        p_value = float(np.mean(stats >= stats[0] * (1 - 1e-9)))  # column 0 is the identity: the data
        wins = p_value < alpha
    else:
        wins = bic_h < bic_lin

    x_hinge = np.column_stack([np.ones(n), t, np.maximum(0.0, t - c)])
    _, b1, b2 = np.linalg.lstsq(x_hinge, y, rcond=None)[0]
    lin_slope = float(np.linalg.lstsq(np.column_stack([np.ones(n), t]), y, rcond=None)[0][1])
    c_knob = sign * c
    if wins and b2 > 0:
        return ThresholdFit(kind, n, criterion, "threshold", c_knob, float(b1), float(b1 + b2),
                            float(b2 * (t[-1] - c)), lin_slope, c_knob, bic_lin, bic_h, p_value)
    note = "breakpoint is a slow-down (saturation), not a threshold" if wins else ""
    return ThresholdFit(kind, n, criterion, "gradual", nan, lin_slope, lin_slope, 0.0, lin_slope, c_knob,
                        bic_lin, bic_h, p_value, note)


SWEEP_COLS = [c for c in KEY_COLS if c != "recipe"]


def sweep_points(df: pd.DataFrame, baseline: str = "base") -> pd.DataFrame:
    """Rows of `df` that lie on a sweep, with columns family, kind and level; the baseline joins every sweep."""
    extra = {"family": pd.Series(dtype=str), "kind": pd.Series(dtype=str), "level": pd.Series(dtype=float),
             "knob_source": pd.Series(dtype=str)}
    knob_col = df["knob"] if "knob" in df else pd.Series([""] * len(df), index=df.index)
    knob_col = knob_col.map(lambda v: v if isinstance(v, str) else "")
    triples = pd.DataFrame({"recipe": df["recipe"], "spec": df["recipe_spec"], "knob": knob_col})
    knobs = {
        (recipe, spec, kj): recorded_knob(kj, recipe, json.loads(spec) if spec else None)
        for recipe, spec, kj in triples.drop_duplicates().itertuples(index=False)
        if recipe != baseline
    }
    comp = df[df["recipe"] != baseline]
    found = [knobs[(r, s, k)] for r, s, k in zip(comp["recipe"], comp["recipe_spec"], knob_col[comp.index])]
    keep = np.array([k is not None for k, _ in found], dtype=bool)
    if not keep.any():
        return df.iloc[0:0].assign(**extra)
    on = [(k, src) for k, src in found if k is not None]
    comp = comp[keep].assign(family=[k.family for k, _ in on], kind=[k.kind for k, _ in on],
                             level=[k.value for k, _ in on], knob_source=[src for _, src in on])
    comp = comp.assign(family=_split_variants(comp))
    base = df[df["recipe"] == baseline]
    parts = [comp] + [
        base.assign(family=family, kind=kind, level=baseline_value(kind), knob_source="baseline")
        for family, kind in sorted(set(zip(comp["family"], comp["kind"])))
    ]
    return pd.concat(parts, ignore_index=True)


def _split_variants(comp: pd.DataFrame) -> list[str]:
    """Family names, with `[key=value]` added where one family mixes recipe variants (e.g. two group sizes)."""
    variants = {
        (r, sp): recipe_variant(r, json.loads(sp) if sp else None)
        for r, sp in comp[["recipe", "recipe_spec"]].drop_duplicates().itertuples(index=False)
    }
    by_family: dict[str, list[dict]] = {}
    for fam, r, sp in zip(comp["family"], comp["recipe"], comp["recipe_spec"]):
        by_family.setdefault(fam, []).append(variants[(r, sp)])
    differ: dict[str, list[str]] = {}  # per family, the settings its members disagree on (once, not once per row)
    for fam, members in by_family.items():
        keys = sorted({k for v in members for k in v})
        differ[fam] = [k for k in keys if len({json.dumps(v.get(k), sort_keys=True) for v in members}) > 1]
    names = []
    for fam, r, sp in zip(comp["family"], comp["recipe"], comp["recipe_spec"]):
        mine = variants[(r, sp)]
        names.append(fam if not differ[fam] else fam + " [" + ", ".join(f"{k}={mine.get(k)}" for k in differ[fam])
                     + "]")
    return names


def _refit(t: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best hinge breakpoint and slope change b2 for every column of ys [n_levels, B] (t sorted, compression up)."""
    cs = _breakpoints(t)
    _, m_hinge = _projections(t, cs)
    rss = np.stack([_rss(m, ys) for m in m_hinge])  # [C, B]
    best = np.argmin(rss, axis=0)
    designs = np.stack([np.column_stack([np.ones(len(t)), t, np.maximum(0.0, t - c)]) for c in cs])
    pinv = np.linalg.pinv(designs)  # [C, 3, n]
    b2 = np.einsum("bn,nb->b", pinv[best, 2, :], ys)
    return cs[best], b2


def _deviations(g: pd.DataFrame, baseline: str, artifacts, n_boot: int, seed: int) -> tuple[np.ndarray | None, str]:
    """[n_levels, B] item-bootstrap deviations of each level's plug-in set size from its full-sample value, the
    same resampled items for every level (the levels are the same items), or None and why."""
    from cpbench.results.analysis.compare import NO_ARTIFACT
    from cpbench.results.analysis.bootstrap import paired_draws
    from cpbench.results.analysis.item_views import cached_view

    if artifacts is None:
        return None, NO_ARTIFACT + " (no results root)"
    base_rows = g[g["recipe"] == baseline]
    if base_rows.empty:
        return None, "no baseline row"
    b0 = base_rows.iloc[0]
    ab, why = artifacts.for_row(b0)
    if ab is None:
        return None, why
    key = (str(b0["protocol"]), float(b0["alpha"]), float(b0["cal_ratio"]), int(b0["seed"]))
    try:
        vb = cached_view(ab, *key)
        score = str(b0["score"])
        out = []
        for _, r in g.iterrows():
            art, why = (ab, "") if r["recipe"] == baseline else artifacts.for_row(r)
            if art is None:
                return None, why
            d = paired_draws(vb, cached_view(art, *key), (score,), n_boot=n_boot, seed=seed)
            v = d.cand[f"{score}.set_size"]
            out.append(v[1:] - v[0])
    except CpbenchError as exc:
        return None, f"no item-level check: {exc}"
    return np.array(out), ""


def _item_fields(fit: ThresholdFit, g: pd.DataFrame, dev: np.ndarray | None, why: str,
                 level: float) -> dict[str, object]:
    nan = math.nan
    out: dict[str, object] = dict(threshold_lo=nan, threshold_hi=nan, jump_lo=nan, jump_hi=nan, slope_change=nan,
                                  slope_change_lo=nan, slope_change_hi=nan, item_check="")
    if fit.verdict == "too-few-levels":
        return out
    if dev is None:
        out["item_check"] = why
        return out
    sign = compression_sign(g["kind"].iloc[0])
    t = sign * g["level"].to_numpy(dtype=float)
    order = np.argsort(t, kind="mergesort")
    t, y, dev = t[order], g["set_size"].to_numpy(dtype=float)[order], dev[order]
    c_b, b2_b = _refit(t, y[:, None] + dev)
    c_hat, b2_hat = _refit(t, y[:, None])
    tail = (1 - level) / 2 * 100
    lo_c, hi_c = np.percentile(sign * c_b, [tail, 100 - tail])
    jump_b = b2_b * (t[-1] - c_b)
    out.update(threshold_lo=float(min(lo_c, hi_c)), threshold_hi=float(max(lo_c, hi_c)),
               jump_lo=float(np.percentile(jump_b, tail)), jump_hi=float(np.percentile(jump_b, 100 - tail)),
               slope_change=float(b2_hat[0]), slope_change_lo=float(np.percentile(b2_b, tail)),
               slope_change_hi=float(np.percentile(b2_b, 100 - tail)))
    # one-sided: the slope change is shown positive when its (1 - level) lower percentile is above zero
    shown = float(np.percentile(b2_b, (1 - level) * 100)) > 0
    out["item_check"] = "distinguishable from item noise" if shown else "not distinguishable from item noise"
    return out


def threshold_table(
    df: pd.DataFrame,
    *,
    baseline: str = "base",
    criterion: Criterion = "permutation",
    alpha: float = 0.05,
    min_levels: int = MIN_LEVELS,
    seed: int = 0,
    artifacts=None,
    n_boot: int = 300,
    level: float = 0.95,
) -> pd.DataFrame:
    """One threshold fit per (model, sweep family, task, prompt, shots, ..., conformal score).

    Item-level check (docs/conformal.md): every level's set size is re-measured on the same bootstrap resamples of
    the items (calibration re-run inside), the hinge re-fitted per replicate; the breakpoint, jump and slope-change
    intervals are percentiles of the refits. A `threshold` is reported only when the slope change is shown positive
    (its one-sided lower percentile above zero); otherwise the verdict is `gradual` (not distinguishable from item
    noise), or `inconclusive` when the artifacts are missing (`artifacts`: a compare.ArtifactIndex)."""
    fields = list(ThresholdFit.__dataclass_fields__)
    item_cols = ["threshold_lo", "threshold_hi", "jump_lo", "jump_hi", "slope_change", "slope_change_lo",
                 "slope_change_hi", "item_check"]
    columns = [*SWEEP_COLS, "family", *fields, *item_cols, "levels", "set_sizes", "knob_source", "sample_data",
               "notes"]
    pts = sweep_points(df, baseline)
    rows = []
    if pts.empty:
        return pd.DataFrame(columns=columns)
    devs: dict[tuple, tuple[np.ndarray | None, str]] = {}
    groups = list(pts.groupby([*SWEEP_COLS, "family", "kind"], sort=True, dropna=False))
    task_i = SWEEP_COLS.index("task")
    for key, g in sorted(groups, key=lambda kg: str(kg[0][task_i]) == "avg"):  # averages after their tasks
        g = g.sort_values("level")
        fit = fit_threshold(g["level"].to_numpy(), g["set_size"].to_numpy(), g["kind"].iloc[0],
                            criterion=criterion, alpha=alpha, min_levels=min_levels, seed=seed)
        if str(key[task_i]) == "avg":
            parts = [v for k, v in devs.items() if k[:task_i] + k[task_i + 1:] == key[:task_i] + key[task_i + 1:]]
            ok = [d for d, _ in parts if d is not None and d.shape == (len(g), n_boot)]
            dev, why = (np.mean(ok, axis=0), "") if parts and len(ok) == len(parts) else (
                None, "no item-level check: a task lacks one")
        else:
            dev, why = (None, "") if fit.verdict == "too-few-levels" else _deviations(g, baseline, artifacts,
                                                                                         n_boot, seed)
            devs[key] = (dev, why)
        item = _item_fields(fit, g, dev, why, level)
        fitd = asdict(fit)
        if fit.verdict == "threshold" and item["item_check"] != "distinguishable from item noise":
            if dev is None:
                fitd.update(verdict="inconclusive", note="; ".join(filter(None, [fit.note, str(item["item_check"])])))
            else:
                fitd.update(verdict="gradual", threshold=math.nan, note="; ".join(filter(None, [
                    fit.note, "the breakpoint's slope change is not distinguishable from item noise"])))
        if fitd["verdict"] != "threshold":
            # The breakpoint and jump intervals describe the hinge fit; with no threshold reported the estimates
            # are the straight line's (jump 0), so those intervals would sit beside an estimate outside them.
            item.update(threshold_lo=math.nan, threshold_hi=math.nan, jump_lo=math.nan, jump_hi=math.nan)
        sources = sorted(set(g["knob_source"]) - {"baseline"})
        rows.append({
            **dict(zip([*SWEEP_COLS, "family"], key[:-1])),
            **fitd,
            **item,
            "levels": " ".join(f"{v:g}" for v in g["level"]),
            "set_sizes": " ".join(f"{v:.4f}" for v in g["set_size"]),
            "knob_source": ",".join(sources),
            "sample_data": bool(g["sample_data"].any()),
            "notes": merge_notes(g["notes"]),
        })
    out = pd.DataFrame(rows, columns=columns)
    return out.sort_values([*SWEEP_COLS, "family"], kind="mergesort").reset_index(drop=True)
