"""Decoupling: does compression move accuracy and uncertainty (conformal set size) differently?

Each compressed cell (model, recipe, task, prompt, shots, ..., conformal score) is compared with the same model's
baseline recipe under the same analysis key. Deltas are candidate minus baseline (the records' means over splits).

Intervals (`d_<metric>_lo/_hi`) are item-level: they cover the population difference over item samples
(`cpbench.results.analysis.paired`, docs/conformal.md), from the two records' logits artifacts. The split-to-split interval of
earlier versions is kept as `d_<metric>_split_lo/_hi` and labelled as what it is (how much the number moves with other
random splits of the same items). Item-by-item diagnostics (flips, agreement, KL, set churn, Jaccard, newly
confidently wrong) come with their own intervals.

Categories are statements with confidence (decision="interval", the default): accuracy is *kept* when a one-sided
test shows the drop is below epsilon (Delta acc > -epsilon; the drop side of a TOST equivalence test: a gain is not a
loss), *dropped* when it shows the drop beyond epsilon; set size *holds* when a one-sided test shows the increase below
delta, *grows* when it shows it beyond. The table's p-values form one family adjusted by `multiplicity` (Holm by
default) at one-sided alpha = (1 - level) / 2 (so a lone cell decides exactly when its 95 % interval clears the
margin).

| accuracy | set size | category        |
|----------|----------|-----------------|
| kept     | holds    | `unaffected`    |
| kept     | grows    | `hidden-risk`   |
| dropped  | holds    | `accuracy-only` |
| dropped  | grows    | `coupled`       |
| either undecided    || `inconclusive` (the note says which, and roughly how many items would decide it) |

`unpaired` marks a cell that could not be compared (no baseline, different items or analysis key); the note says why.
With no artifact for a record the cell is `inconclusive` ("no item-level interval: artifact not found"), never decided
on the split spread. decision="point" keeps the old rule (point estimates against the tolerances).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cpbench.results.analysis.compare import ArtifactIndex, RecordNumbers, compare_numbers
from cpbench.results.analysis.decisions import (
    PROCEDURE_TEXT,
    Directional,
    adjust,
    check_procedure,
    decided,
    decision_levels,
    fmt_more_items,
)
from cpbench.results.analysis.bootstrap import N_BOOT
from cpbench.results.analysis.estimate import LEVEL, Estimate, z_of
from cpbench.results.analysis.stats import kendall_tau_b, paired_bootstrap
from cpbench.base import limits as defaults
from cpbench.base.errors import CpbenchError
from cpbench.results.store import ANALYSIS_KEY_COLS, KEY_COLS, METRICS, merge_notes

ITEMS_UNVERIFIED = "items matched on n and analysis key only (no items_hash in a record)"
CATEGORIES = ("unaffected", "hidden-risk", "accuracy-only", "coupled", "inconclusive", "unpaired")
DIAGNOSTICS = ("flip_cw", "flip_wc", "agreement", "kl", "churn", "jaccard", "newly_wrong")
CALIBRATION_DELTAS = ("ece", "brier", "nll", "entropy")
CELL_COLS = [c for c in KEY_COLS if c != "recipe"]  # what must match between a candidate and its baseline
# Deltas are differences of floats (0.80 - 0.81 = -0.010000000000000009): a delta exactly at a tolerance or limit
# must land on the documented side. 1e-9 is far below any real difference (1 / n_test), far above float rounding.
EDGE_TOL = 1e-9


@dataclass(frozen=True)
class DecouplingConfig:
    baseline: str = "base"
    # the gate's default limits (cpbench.base.limits): a run's decoupling verdicts and `cpbench check` agree
    epsilon: float = defaults.MAX_ACCURACY_DROP  # largest accuracy drop (0-1 scale) that still counts as "kept"
    delta: float = defaults.MAX_SET_SIZE_INCREASE  # largest mean set-size increase (options) that still "holds"
    n_boot: int = 2000  # resamples of the split-to-split interval
    level: float = LEVEL
    seed: int = 0
    decision: str = "interval"  # "interval": categories from item-level tests; "point": point estimates
    multiplicity: str = "holm"  # family: every (cell, accuracy/set-size) statement of the table
    item_boot: int = N_BOOT  # item bootstrap replicates

    def __post_init__(self) -> None:
        check_procedure(self.multiplicity)
        if self.decision not in ("interval", "point"):
            raise CpbenchError(f"decision must be 'interval' or 'point', got {self.decision!r}")

    @property
    def alpha(self) -> float:
        """One-sided level of each statement (before the multiplicity adjustment)."""
        return (1.0 - self.level) / 2.0

    def describe(self) -> str:
        head = (f"baseline recipe '{self.baseline}'; accuracy kept when the drop is <= epsilon = {self.epsilon:g}; "
                f"set size holds when the increase is <= delta = {self.delta:g} options; ")
        if self.decision == "point":
            return head + (f"categories from point estimates; {self.level:.0%} paired bootstrap intervals over "
                           f"splits ({self.n_boot} resamples, seed {self.seed}) describe split noise only")
        return head + (
            f"{self.level:.0%} item-level paired intervals (item bootstrap re-running calibration, "
            f"{self.item_boot} replicates, plus split Monte Carlo error); categories from one-sided tests at "
            f"alpha = {self.alpha:g}, family = every accuracy and set-size statement of the table, "
            f"{PROCEDURE_TEXT[self.multiplicity]}"
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


SPLIT_METRICS = ("acc", *METRICS)


def _empty_fields(out: dict[str, Any]) -> None:
    for m in (*SPLIT_METRICS, *CALIBRATION_DELTAS):
        out.setdefault(f"d_{m}", math.nan)
        for sfx in ("_lo", "_hi", "_se", "_split_lo", "_split_hi"):
            out.setdefault(f"d_{m}{sfx}", math.nan)
    for m in DIAGNOSTICS:
        out.setdefault(m, math.nan)
        out.setdefault(f"{m}_lo", math.nan)
        out.setdefault(f"{m}_hi", math.nan)


def _put(out: dict[str, Any], key: str, est: Estimate | None, point: bool = True) -> None:
    if est is None:
        return
    if point:
        out[key] = est.point
    out[f"{key}_lo"], out[f"{key}_hi"] = est.lo, est.hi
    if key.startswith("d_"):
        out[f"{key}_se"] = est.se


def item_estimates(base: pd.Series, cand: pd.Series, cfg: DecouplingConfig,
                   artifacts: ArtifactIndex | None) -> tuple[dict[str, Estimate], str]:
    """Item-level estimates of one cell ({} and the reason when the artifacts are missing)."""
    if artifacts is None:
        return {}, "no item-level interval: artifact not found (no results root to look in)"
    (ab, why_b), (ac, why_c) = artifacts.for_row(base), artifacts.for_row(cand)
    if ab is None or ac is None:
        return {}, (why_b if ab is None else why_c) + f" ({'baseline' if ab is None else 'candidate'})"
    score = str(cand["score"])
    try:
        est = compare_numbers(ab, ac, RecordNumbers.from_rows([base]), RecordNumbers.from_rows([cand]), (score,),
                              n_boot=cfg.item_boot, seed=cfg.seed, level=cfg.level)
    except CpbenchError as exc:
        return {}, f"no item-level interval: {exc}"
    out = {m: est[f"d_{score}.{m}"] for m in METRICS} | {"acc": est["d_acc"]}
    out |= {m: est[f"d_{m}"] for m in CALIBRATION_DELTAS}
    out |= {m: est[m] for m in ("flip_cw", "flip_wc", "agreement", "kl")}
    out |= {m: est[f"{score}.{m}"] for m in ("churn", "jaccard", "newly_wrong")}
    return out, ""


def compare_rows(base: pd.Series, cand: pd.Series, cfg: DecouplingConfig,
                 artifacts: ArtifactIndex | None = None) -> tuple[dict[str, Any], dict[str, Estimate]]:
    """Deltas, intervals and (point-mode) category of one candidate row against its baseline row."""
    out: dict[str, Any] = {}
    problem = pairing_problem(base, cand)
    for m in SPLIT_METRICS:
        out[f"{m}_base"] = float(base[m])
        out[m] = float(cand[m])
    if problem:
        _empty_fields(out)
        out.update(paired=False, category="unpaired", note=f"refused to pair: {problem}")
        return out, {}
    note = _split_note(base, cand)
    for m in SPLIT_METRICS:  # the record's means (the mean of per-split differences equals their difference)
        out[f"d_{m}"] = float(cand[m]) - float(base[m])
    if not note:
        cand_ps = np.column_stack([cand[f"ps_{m}"] for m in SPLIT_METRICS])
        base_ps = np.column_stack([base[f"ps_{m}"] for m in SPLIT_METRICS])
        _, lo, hi = paired_bootstrap(cand_ps, base_ps, n_boot=cfg.n_boot, level=cfg.level, seed=cfg.seed)
        for i, m in enumerate(SPLIT_METRICS):
            out[f"d_{m}_split_lo"], out[f"d_{m}_split_hi"] = float(lo[i]), float(hi[i])
    est: dict[str, Estimate] = {}
    why = ""
    if cfg.decision == "interval" and str(cand["task"]) != "avg":
        est, why = item_estimates(base, cand, cfg, artifacts)
        for m in SPLIT_METRICS:
            _put(out, f"d_{m}", est.get(m), point=False)
        for m in CALIBRATION_DELTAS:
            _put(out, f"d_{m}", est.get(m))
        for m in DIAGNOSTICS:
            _put(out, m, est.get(m))
    if cfg.decision == "point":
        for m in SPLIT_METRICS:  # point mode shows the split interval where the item-level one would be
            out[f"d_{m}_lo"], out[f"d_{m}_hi"] = out.get(f"d_{m}_split_lo", math.nan), out.get(f"d_{m}_split_hi",
                                                                                                math.nan)
    _empty_fields(out)
    if not (base["items_hash"] and cand["items_hash"]):
        note = "; ".join(filter(None, [note, ITEMS_UNVERIFIED]))
    note = "; ".join(filter(None, [why, note]))
    out.update(
        paired=not any(p.startswith(("no per-split", "per-split arrays")) for p in note.split("; ")) or bool(est),
        category=categorize(out["d_acc"], out["d_set_size"], cfg.epsilon, cfg.delta),
        note=note,
    )
    return out, est


def _average(parts: list[dict[str, Estimate]]) -> dict[str, Estimate]:
    """Estimates of the unweighted task average: tasks are independent item samples, so variances add. A bounded
    metric keeps its range. A count of items (flip rates, agreement) over tasks of equal n is the pooled count, exact
    again: a sum of binomials with different thetas is Poisson-binomial, whose tails beyond its mean are at most the
    binomial's of the same mean (Hoeffding 1956), so the Clopper-Pearson bounds keep their level. Other shares enter
    with at least the se their own interval implies on its wider side, so a task with no flip (bootstrap se 0, its
    interval one-sided) does not make the average's interval [0, 0] or too short on the side away from 0."""
    out: dict[str, Estimate] = {}
    t = len(parts)
    for key in parts[0]:
        es = [p[key] for p in parts if key in p]
        if len(es) != t:
            continue
        point = sum(e.point for e in es) / t
        same = len({(e.lo_limit, e.hi_limit) for e in es}) == 1  # one metric, so one range; else no clipping
        lo, hi = (es[0].lo_limit, es[0].hi_limit) if same else (-math.inf, math.inf)
        se_split = math.sqrt(sum(e.se_split**2 for e in es)) / t
        if all(e.method == "binomial" and e.ok for e in es) and len({e.n for e in es}) == 1:
            se = math.sqrt(sum(e.se**2 for e in es)) / t
            out[key] = Estimate(key, point, se, se, 0.0, t * es[0].n, "binomial", es[0].level,
                                "mean over tasks: the pooled count", lo_limit=lo, hi_limit=hi)
            continue
        se = math.sqrt(sum(_interval_se(e) ** 2 for e in es)) / t
        se_item = math.sqrt(sum(e.se_item**2 for e in es)) / t
        out[key] = Estimate(key, point, se, max(se_item, math.sqrt(max(se**2 - se_split**2, 0.0))), se_split,
                            sum(e.n for e in es), "normal", es[0].level, "mean over tasks", lo_limit=lo, hi_limit=hi)
    return out


def _interval_se(e: Estimate) -> float:
    """The se a task's estimate enters the average with: its own, or for a share of items (exact or Wilson interval)
    the larger of that and its interval's wider side over z (a count of 0 has a one-sided interval: its full width
    over 2z would give the average's upper end half the weight it needs)."""
    if e.method not in ("binomial", "wilson") or not e.ok:
        return e.se
    lvl = 0.5 + e.level / 2.0
    side = max(e.bound("upper", lvl) - e.point, e.point - e.bound("lower", lvl)) / z_of(lvl)
    return max(e.se, side) if math.isfinite(side) else e.se


def _decide(table: pd.DataFrame, ests: list[dict[str, Estimate]], cfg: DecouplingConfig) -> None:
    """Categories from one-sided tests with the table's multiplicity adjustment (in place)."""
    tests: list[tuple[int, str, Directional]] = []
    for i, est in enumerate(ests):
        if table.at[i, "category"] == "unpaired":
            continue
        tests.append((i, "acc", Directional.test(est.get("acc"), -cfg.epsilon)))
        tests.append((i, "set_size", Directional.test(est.get("set_size"), cfg.delta)))
    p_adj = adjust([t[2].p for t in tests], cfg.multiplicity)
    levels = decision_levels([t[2].p for t in tests], cfg.alpha, cfg.multiplicity)
    by_cell: dict[int, dict[str, tuple[Directional, float, float]]] = {}
    for (i, what, d), pa, lv in zip(tests, p_adj, levels):
        by_cell.setdefault(i, {})[what] = (d, pa, lv)
        table.at[i, f"p_{what}"] = pa
    for i, parts in by_cell.items():
        (da, pa, la), (ds, ps, ls) = parts["acc"], parts["set_size"]
        if not ests[i]:
            table.at[i, "category"] = "inconclusive"
            continue
        acc = ("dropped" if da.below else "kept") if decided(pa, cfg.alpha) else ""
        size = ("holds" if ds.below else "grows") if decided(ps, cfg.alpha) else ""
        if acc and size:
            table.at[i, "category"] = {("kept", "holds"): "unaffected", ("kept", "grows"): "hidden-risk",
                                       ("dropped", "holds"): "accuracy-only",
                                       ("dropped", "grows"): "coupled"}[(acc, size)]
            continue
        why = []
        if not acc:
            n_have = da.estimate.n if da.estimate is not None else 0
            why.append(f"accuracy vs epsilon undecided ({fmt_more_items(da.items_needed(1.0 - la), n_have)} would "
                       f"likely decide it)")
        if not size:
            n_have = ds.estimate.n if ds.estimate is not None else 0
            why.append(f"set size vs delta undecided ({fmt_more_items(ds.items_needed(1.0 - ls), n_have)} would "
                       f"likely decide it)")
        table.at[i, "category"] = "inconclusive"
        table.at[i, "note"] = "; ".join(filter(None, [*why, str(table.at[i, "note"] or "")]))


def decoupling_table(df: pd.DataFrame, cfg: DecouplingConfig = DecouplingConfig(),
                     artifacts: ArtifactIndex | None = None) -> pd.DataFrame:
    """One row per non-baseline row of `df` (a `load_results` frame, optionally with task averages).

    `artifacts` finds each record's logits artifact (item-level intervals); without it, or without an artifact,
    interval-mode cells are `inconclusive`."""
    columns = [*KEY_COLS, "baseline"]
    for m in SPLIT_METRICS:
        columns += [f"{m}_base", m, f"d_{m}", f"d_{m}_lo", f"d_{m}_hi", f"d_{m}_se", f"d_{m}_split_lo",
                    f"d_{m}_split_hi"]
    for m in CALIBRATION_DELTAS:
        columns += [f"d_{m}", f"d_{m}_lo", f"d_{m}_hi", f"d_{m}_se"]
    for m in DIAGNOSTICS:
        columns += [m, f"{m}_lo", f"{m}_hi"]
    columns += ["p_acc", "p_set_size", "category", "paired", "note", "sample_data", "notes", "reps_d_set_size"]
    if df.empty:
        return pd.DataFrame(columns=columns)
    base_rows = df[df["recipe"] == cfg.baseline]
    score_cols = [c for c in CELL_COLS if c not in ANALYSIS_KEY_COLS]
    base_by_cell, base_by_score = {}, {}  # the latter only names why a cell has no baseline under its analysis key
    for _, r in base_rows.iterrows():
        base_by_cell[tuple(r[c] for c in CELL_COLS)] = r
        base_by_score.setdefault(tuple(r[c] for c in score_cols), r)
    out, ests = [], []
    cands = df[df["recipe"] != cfg.baseline]
    cands = pd.concat([cands[cands["task"] != "avg"], cands[cands["task"] == "avg"]])  # averages need the parts
    by_group: dict[tuple, list[dict[str, Estimate]]] = {}
    group_cols = [c for c in KEY_COLS if c != "task"]
    for _, cand in cands.iterrows():
        row: dict[str, Any] = {c: cand[c] for c in KEY_COLS}
        row["baseline"] = cfg.baseline
        base = base_by_cell.get(tuple(cand[c] for c in CELL_COLS))
        est: dict[str, Estimate] = {}
        if base is None:
            other = base_by_score.get(tuple(cand[c] for c in score_cols))
            if other is not None:
                why = "analysis keys differ (" + ", ".join(
                    f"{c} {other[c]!r} vs {cand[c]!r}" for c in ANALYSIS_KEY_COLS if other[c] != cand[c]
                ) + ")"
            else:
                why = f"no '{cfg.baseline}' result for this model, task, prompt and score"
            row.update({f"{m}": float(cand[m]) for m in SPLIT_METRICS})
            row.update(category="unpaired", paired=False, note=f"refused to pair: {why}")
        else:
            fields, est = compare_rows(base, cand, cfg, artifacts)
            row.update(fields)
            e_ss = est.get("set_size")
            if e_ss is not None and e_ss.reps is not None and str(cand["task"]) != "avg":
                # the size-effect slope's joint replicates (same items -> the same resamples for every model)
                row["reps_d_set_size"] = {"reps": e_ss.reps, "se_item": e_ss.se_item, "se_split": e_ss.se_split,
                                          "items": str(cand["items_hash"] or ""), "n": e_ss.n}
            gkey = tuple(cand[c] for c in group_cols)
            if str(cand["task"]) == "avg" and cfg.decision == "interval":
                parts = by_group.get(gkey, [])
                whole = bool(parts) and all(parts) and not pd.isna(cand["n"]) and sum(
                    p["acc"].n for p in parts) == int(cand["n"])  # every task of the average has an estimate
                est = _average(parts) if whole else {}
                if est:
                    for m in SPLIT_METRICS:
                        _put(row, f"d_{m}", est.get(m), point=False)
                    for m in (*CALIBRATION_DELTAS, *DIAGNOSTICS):
                        _put(row, f"d_{m}" if m in CALIBRATION_DELTAS else m, est.get(m))
                else:
                    row["note"] = "; ".join(filter(None, ["no item-level interval: a task lacks one", row["note"]]))
            elif str(cand["task"]) != "avg":
                by_group.setdefault(gkey, []).append(est)
            row["sample_data"] = bool(base["sample_data"]) or bool(cand["sample_data"])
            row["notes"] = merge_notes([base["notes"], cand["notes"]])
        row.setdefault("sample_data", bool(cand["sample_data"]))
        row.setdefault("notes", cand["notes"])
        out.append(row)
        ests.append(est)
    table = pd.DataFrame(out, columns=columns)
    if cfg.decision == "interval":
        _decide(table, ests, cfg)
    order = table.sort_values(list(KEY_COLS), kind="mergesort").index
    return table.loc[order].reset_index(drop=True)


def _order(names: list[str], values: np.ndarray, descending: bool) -> list[str]:
    keys = -values if descending else values
    return [names[i] for i in np.lexsort((np.array(names), keys))]


def _ranked(names: list[str], values: np.ndarray, descending: bool, sep: str) -> str:
    """The order as text with ties shown as ties: 'a > b = c' (equal within EDGE_TOL), never a made-up strict order."""
    order = _order(names, values, descending)
    by_name = dict(zip(names, values))
    out = order[:1]
    for prev, name in zip(order, order[1:]):
        a, b = by_name[prev], by_name[name]
        tie = (math.isnan(a) and math.isnan(b)) or abs(a - b) <= EDGE_TOL
        out.append(("= " if tie else f"{sep} ") + name)
    return " ".join(out)


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
            "acc_order": _ranked(names, acc, True, ">"),
            "set_size_order": _ranked(names, ss, False, "<"),
            "uacc_order": _ranked(names, uacc, True, ">"),
            "uacc_flips": len(flipped),
            "flips": ", ".join(flips),
        })
    return pd.DataFrame(rows, columns=columns)
