"""Decoupling: does compression move accuracy and uncertainty (conformal set size) differently?

Each compressed cell (model, recipe, task, prompt, shots, ..., conformal score) is compared with the same model's
baseline recipe under the same analysis key. Deltas are candidate minus baseline; their intervals come from a paired
bootstrap over the calibration/test splits both records share (see `stats.paired_bootstrap`).

Categories (point estimates against two configurable tolerances; printed with every table):

| accuracy drop <= epsilon | set-size increase <= delta | category        |
|--------------------------|----------------------------|-----------------|
| yes                      | yes                        | `unaffected`    |
| yes                      | no                         | `hidden-risk`   |
| no                       | yes                        | `accuracy-only` |
| no                       | no                         | `coupled`       |

`unpaired` marks a cell that could not be compared (no baseline, different items or analysis key); the note says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cpbench.analysis.stats import kendall_tau_b, paired_bootstrap
from cpbench.store import ANALYSIS_KEY_COLS, KEY_COLS, METRICS, merge_notes

ITEMS_UNVERIFIED = "items matched on n and analysis key only (no items_hash in a record)"
CATEGORIES = ("unaffected", "hidden-risk", "accuracy-only", "coupled", "unpaired")
CELL_COLS = [c for c in KEY_COLS if c != "recipe"]  # what must match between a candidate and its baseline
# Deltas are differences of floats (0.80 - 0.81 = -0.010000000000000009): a delta exactly at a tolerance or limit
# must land on the documented side. 1e-9 is far below any real difference (1 / n_test), far above float rounding.
EDGE_TOL = 1e-9


@dataclass(frozen=True)
class DecouplingConfig:
    baseline: str = "base"
    epsilon: float = 0.01  # largest accuracy drop (absolute, 0-1 scale) that still counts as "accuracy kept"
    delta: float = 0.10  # largest mean set-size increase (options) that still counts as "set size holds"
    n_boot: int = 2000
    level: float = 0.95
    seed: int = 0

    def describe(self) -> str:
        return (
            f"baseline recipe '{self.baseline}'; accuracy kept when the drop is <= epsilon = {self.epsilon:g}; "
            f"set size holds when the increase is <= delta = {self.delta:g} options; "
            f"{self.level:.0%} paired bootstrap intervals over splits ({self.n_boot} resamples, seed {self.seed})"
        )


def categorize(d_acc: float, d_set_size: float, epsilon: float, delta: float) -> str:
    """Category of one cell from its accuracy and set-size deltas (candidate - baseline)."""
    if not (math.isfinite(d_acc) and math.isfinite(d_set_size)):
        return "unpaired"
    # Deltas are differences of floats (0.80 - 0.81 = -0.010000000000000009): without a tolerance a drop of
    # exactly epsilon, or an increase of exactly delta, would fall on the wrong side of the documented "<=".
    acc_kept = -d_acc <= epsilon + EDGE_TOL
    size_holds = d_set_size <= delta + EDGE_TOL
    if acc_kept:
        return "unaffected" if size_holds else "hidden-risk"
    return "accuracy-only" if size_holds else "coupled"


def pairing_problem(base: pd.Series, cand: pd.Series) -> str:
    """Why two rows may not be compared ('' when they may). Both rows share the cell key by construction."""
    for col in ANALYSIS_KEY_COLS:
        if base[col] != cand[col]:
            return f"analysis keys differ ({col} {base[col]!r} vs {cand[col]!r})"
    for col in ("n", "n_cal", "n_test"):
        b, c = base[col], cand[col]
        if b is not None and c is not None and not (pd.isna(b) or pd.isna(c)) and int(b) != int(c):
            return f"item sets differ ({col} {int(b)} in the baseline vs {int(c)})"
    if base["items_hash"] and cand["items_hash"] and base["items_hash"] != cand["items_hash"]:
        return "item sets differ (items_hash differs: other ids or labels)"
    if base["prompts_hash"] and cand["prompts_hash"] and base["prompts_hash"] != cand["prompts_hash"]:
        return "prompts differ (prompts_hash differs)"
    return ""


def _split_note(base: pd.Series, cand: pd.Series) -> str:
    arrays = [base[f"ps_{m}"] for m in ("acc", *METRICS)] + [cand[f"ps_{m}"] for m in ("acc", *METRICS)]
    if any(a is None for a in arrays):
        return "no per-split values in a record: deltas of means, no interval"
    if len({len(a) for a in arrays}) != 1:
        return "per-split arrays differ in length: deltas of means, no interval"
    if len(arrays[0]) < 2:
        return "a single split: no interval"
    return ""


def compare_rows(base: pd.Series, cand: pd.Series, cfg: DecouplingConfig) -> dict[str, Any]:
    """Deltas, paired intervals and the category of one candidate row against its baseline row."""
    out: dict[str, Any] = {}
    problem = pairing_problem(base, cand)
    metrics = ("acc", *METRICS)
    for m in metrics:
        out[f"{m}_base"] = float(base[m])
        out[m] = float(cand[m])
    if problem:
        for m in metrics:
            out[f"d_{m}"] = out[f"d_{m}_lo"] = out[f"d_{m}_hi"] = math.nan
        out.update(paired=False, category="unpaired", note=f"refused to pair: {problem}")
        return out
    note = _split_note(base, cand)
    for m in metrics:  # the record's means (the mean of per-split differences equals their difference)
        out[f"d_{m}"] = float(cand[m]) - float(base[m])
        out[f"d_{m}_lo"] = out[f"d_{m}_hi"] = math.nan
    if not note:
        cand_ps = np.column_stack([cand[f"ps_{m}"] for m in metrics])
        base_ps = np.column_stack([base[f"ps_{m}"] for m in metrics])
        _, lo, hi = paired_bootstrap(cand_ps, base_ps, n_boot=cfg.n_boot, level=cfg.level, seed=cfg.seed)
        for i, m in enumerate(metrics):
            out[f"d_{m}_lo"], out[f"d_{m}_hi"] = float(lo[i]), float(hi[i])
    if not (base["items_hash"] and cand["items_hash"]):
        note = "; ".join(filter(None, [note, ITEMS_UNVERIFIED]))
    out.update(
        paired=not note.startswith(("no per-split", "per-split arrays")),
        category=categorize(out["d_acc"], out["d_set_size"], cfg.epsilon, cfg.delta),
        note=note,
    )
    return out


def decoupling_table(df: pd.DataFrame, cfg: DecouplingConfig = DecouplingConfig()) -> pd.DataFrame:
    """One row per non-baseline row of `df` (a `load_results` frame, optionally with task averages)."""
    columns = [*KEY_COLS, "baseline"]
    for m in ("acc", *METRICS):
        columns += [f"{m}_base", m, f"d_{m}", f"d_{m}_lo", f"d_{m}_hi"]
    columns += ["category", "paired", "note", "sample_data", "notes"]
    if df.empty:
        return pd.DataFrame(columns=columns)
    base_rows = df[df["recipe"] == cfg.baseline]
    score_cols = [c for c in CELL_COLS if c not in ANALYSIS_KEY_COLS]
    base_by_cell, base_by_score = {}, {}  # the latter only names why a cell has no baseline under its analysis key
    for _, r in base_rows.iterrows():
        base_by_cell[tuple(r[c] for c in CELL_COLS)] = r
        base_by_score.setdefault(tuple(r[c] for c in score_cols), r)
    out = []
    for _, cand in df[df["recipe"] != cfg.baseline].iterrows():
        row: dict[str, Any] = {c: cand[c] for c in KEY_COLS}
        row["baseline"] = cfg.baseline
        base = base_by_cell.get(tuple(cand[c] for c in CELL_COLS))
        if base is None:
            other = base_by_score.get(tuple(cand[c] for c in score_cols))
            if other is not None:
                why = "analysis keys differ (" + ", ".join(
                    f"{c} {other[c]!r} vs {cand[c]!r}" for c in ANALYSIS_KEY_COLS if other[c] != cand[c]
                ) + ")"
            else:
                why = f"no '{cfg.baseline}' result for this model, task, prompt and score"
            row.update({f"{m}": float(cand[m]) for m in ("acc", *METRICS)})
            row.update(category="unpaired", paired=False, note=f"refused to pair: {why}")
        else:
            row.update(compare_rows(base, cand, cfg))
            row["sample_data"] = bool(base["sample_data"]) or bool(cand["sample_data"])
            row["notes"] = merge_notes([base["notes"], cand["notes"]])
        row.setdefault("sample_data", bool(cand["sample_data"]))
        row.setdefault("notes", cand["notes"])
        out.append(row)
    table = pd.DataFrame(out, columns=columns)
    return table.sort_values(list(KEY_COLS), kind="mergesort").reset_index(drop=True)


def _order(names: list[str], values: np.ndarray, descending: bool) -> list[str]:
    keys = -values if descending else values
    return [names[i] for i in np.lexsort((np.array(names), keys))]


def rank_agreement(df: pd.DataFrame) -> pd.DataFrame:
    """Across the recipes of each cell: Kendall tau between the accuracy and set-size rankings, and UAcc flips.

    `tau_acc_size` is tau-b between accuracy and minus set size: +1 when the more accurate recipe always has the
    smaller sets, -1 when the rankings are reversed. A UAcc flip is a pair of recipes that accuracy orders one way
    and UAcc the other way; `flips` lists them as `a>b` (a more accurate, b higher UAcc).
    """
    columns = [*CELL_COLS, "n_recipes", "tau_acc_size", "acc_order", "set_size_order", "uacc_order",
               "uacc_flips", "flips"]
    rows = []
    if df.empty:
        return pd.DataFrame(columns=columns)
    for key, g in df.groupby(CELL_COLS, sort=True, dropna=False):
        g = g.sort_values("recipe")
        names = list(g["recipe"])
        acc, ss, uacc = (g[c].to_numpy(dtype=float) for c in ("acc", "set_size", "uacc"))
        i, j = np.triu_indices(len(names), k=1)
        s_acc, s_uacc = np.sign(acc[i] - acc[j]), np.sign(uacc[i] - uacc[j])
        flipped = np.flatnonzero(s_acc * s_uacc < 0)
        flips = sorted(
            f"{names[i[f]]}>{names[j[f]]}" if s_acc[f] > 0 else f"{names[j[f]]}>{names[i[f]]}" for f in flipped
        )
        rows.append({
            **dict(zip(CELL_COLS, key)),
            "n_recipes": len(names),
            "tau_acc_size": kendall_tau_b(acc, -ss) if len(names) >= 2 else math.nan,
            "acc_order": " > ".join(_order(names, acc, True)),
            "set_size_order": " < ".join(_order(names, ss, False)),
            "uacc_order": " > ".join(_order(names, uacc, True)),
            "uacc_flips": len(flipped),
            "flips": ", ".join(flips),
        })
    return pd.DataFrame(rows, columns=columns)
