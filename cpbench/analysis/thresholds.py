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

from cpbench.analysis.knobs import KnobKind, baseline_value, compression_sign, recipe_knob, recipe_variant
from cpbench.store import KEY_COLS, merge_notes

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
    extra = {"family": pd.Series(dtype=str), "kind": pd.Series(dtype=str), "level": pd.Series(dtype=float)}
    knobs = {
        (recipe, spec): recipe_knob(recipe, json.loads(spec) if spec else None)
        for recipe, spec in df[["recipe", "recipe_spec"]].drop_duplicates().itertuples(index=False)
        if recipe != baseline
    }
    comp = df[df["recipe"] != baseline]
    found = [knobs[(r, s)] for r, s in zip(comp["recipe"], comp["recipe_spec"])]
    keep = np.array([k is not None for k in found], dtype=bool)
    if not keep.any():
        return df.iloc[0:0].assign(**extra)
    on = [k for k in found if k is not None]
    comp = comp[keep].assign(family=[k.family for k in on], kind=[k.kind for k in on], level=[k.value for k in on])
    comp = comp.assign(family=_split_variants(comp))
    base = df[df["recipe"] == baseline]
    parts = [comp] + [
        base.assign(family=family, kind=kind, level=baseline_value(kind))
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


def threshold_table(
    df: pd.DataFrame,
    *,
    baseline: str = "base",
    criterion: Criterion = "permutation",
    alpha: float = 0.05,
    min_levels: int = MIN_LEVELS,
    seed: int = 0,
) -> pd.DataFrame:
    """One threshold fit per (model, sweep family, task, prompt, shots, ..., conformal score)."""
    fields = list(ThresholdFit.__dataclass_fields__)
    columns = [*SWEEP_COLS, "family", *fields, "levels", "set_sizes", "sample_data", "notes"]
    pts = sweep_points(df, baseline)
    rows = []
    if pts.empty:
        return pd.DataFrame(columns=columns)
    for key, g in pts.groupby([*SWEEP_COLS, "family", "kind"], sort=True, dropna=False):
        g = g.sort_values("level")
        fit = fit_threshold(g["level"].to_numpy(), g["set_size"].to_numpy(), g["kind"].iloc[0],
                            criterion=criterion, alpha=alpha, min_levels=min_levels, seed=seed)
        rows.append({
            **dict(zip([*SWEEP_COLS, "family"], key[:-1])),
            **asdict(fit),
            "levels": " ".join(f"{v:g}" for v in g["level"]),
            "set_sizes": " ".join(f"{v:.4f}" for v in g["set_size"]),
            "sample_data": bool(g["sample_data"].any()),
            "notes": merge_notes(g["notes"]),
        })
    return pd.DataFrame(rows, columns=columns)
