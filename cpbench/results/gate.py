"""The CI gate: compare candidate results with baseline results as a guardrail test.

Matching: a candidate row (model, task, prompt, shots, chat, scoring, data, analysis key, conformal score) is compared
with the baseline side's row for the same cell. When the baseline side holds one recipe for that cell (typically the
base results, or the previous version of a recipe) that row is the baseline whatever the candidate's recipe; when it
holds several, the recipe must match too (a results tree from main against a PR's results tree).

Decisions (decision="interval", the default): every limit is a one-sided test of an item-level paired estimate
(`cpbench.results.analysis.paired`, from the two records' logits artifacts) against the limit:

- set-size increase  cand - base     (limit max_set_size_increase)
- accuracy drop      base - cand     (limit max_accuracy_drop)
- candidate coverage                 (limit min_coverage; split Monte Carlo error only: E[coverage | items] is the
                                      conformal level for any model)
- flip rate          correct -> wrong (limit max_flip_rate)

A check is `within` when the confidence bound on the bad side is inside the limit, `beyond` when the bound on the good
side is outside it, `undecided` otherwise; bounds are one-sided at `level` (95 %) after a family-wise adjustment
(Holm by default) over every (cell, check) of the run. A cell passes when every check is within, fails when any is
beyond, and is `inconclusive` otherwise (the reason names roughly how many items would decide it);
`on_inconclusive="fail"` (default) makes an inconclusive cell fail the gate: a guardrail that cannot show safety does
not ship. decision="point" keeps the old rule (point estimates against the limits).

A baseline cell with no candidate row is `missing` (a failure unless allow_missing); a candidate cell with no
baseline is `new` (reported, not failed). A report in which no cell was decided (no pass and no fail: every cell
inconclusive, missing or new) never passes unless allow_undecided says so: zero decided cells show nothing. A
corrupted record (unparseable or impossible) is bad input, whatever allow_missing says. Bad input (no records, nothing matched, different item sets) raises
CpbenchError, which the CLI turns into exit 2.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

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
from cpbench.results.analysis.decoupling import CELL_COLS, EDGE_TOL, pairing_problem
from cpbench.results.analysis.bootstrap import N_BOOT
from cpbench.results.analysis.estimate import Estimate
from cpbench.results.analysis.stats import paired_bootstrap
from cpbench.base import limits as defaults
from cpbench.base.errors import CpbenchError
from cpbench.results.store import KEY_COLS, Skipped, load_results


@dataclass(frozen=True)
class Limits:
    """The gate's limits; the defaults are cpbench.base.limits' (the same for run, check, the API and the Action)."""

    max_set_size_increase: float | None = defaults.MAX_SET_SIZE_INCREASE
    min_coverage: float | None = defaults.MIN_COVERAGE
    max_accuracy_drop: float | None = defaults.MAX_ACCURACY_DROP
    allow_missing: bool = False
    max_flip_rate: float | None = defaults.MAX_FLIP_RATE

    def __post_init__(self) -> None:
        if self.max_set_size_increase is not None and not self.max_set_size_increase >= 0:  # NaN too: it passes all
            raise CpbenchError(f"--max-set-size-increase must be >= 0, got {self.max_set_size_increase}")
        if self.min_coverage is not None and not 0.0 <= self.min_coverage <= 1.0:
            raise CpbenchError(f"--min-coverage must be in [0, 1], got {self.min_coverage}")
        if self.max_accuracy_drop is not None and not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise CpbenchError(f"--max-accuracy-drop must be in [0, 1], got {self.max_accuracy_drop}")
        if self.max_flip_rate is not None and not 0.0 <= self.max_flip_rate <= 1.0:
            raise CpbenchError(f"--max-flip-rate must be in [0, 1], got {self.max_flip_rate}")

    def describe(self) -> str:
        parts = []
        parts.append("set-size increase <= " + (f"{self.max_set_size_increase:g} options"
                                                 if self.max_set_size_increase is not None else "unchecked"))
        parts.append("coverage >= " + (f"{self.min_coverage:g}" if self.min_coverage is not None else "unchecked"))
        parts.append("accuracy drop <= " + (f"{self.max_accuracy_drop:g}" if self.max_accuracy_drop is not None
                                            else "unchecked"))
        if self.max_flip_rate is not None:
            parts.append(f"flip rate (correct -> wrong) <= {self.max_flip_rate:g}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Decision:
    """How the gate decides: from item-level intervals (default) or point estimates."""

    mode: str = "interval"  # "interval" | "point"
    on_inconclusive: str = "fail"  # "fail" | "warn"
    multiplicity: str = "holm"  # family: every (cell, check) of the run
    level: float = 0.95  # one-sided confidence of each bound (before the adjustment)
    n_boot: int = N_BOOT
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("interval", "point"):
            raise CpbenchError(f"--decision must be 'interval' or 'point', got {self.mode!r}")
        if self.on_inconclusive not in ("fail", "warn"):
            raise CpbenchError(f"--on-inconclusive must be 'fail' or 'warn', got {self.on_inconclusive!r}")
        check_procedure(self.multiplicity)
        if self.multiplicity == "bh":
            raise CpbenchError("the gate controls the family-wise error: use holm, bonferroni or none, not bh")
        if not 0.5 < self.level < 1.0:
            raise CpbenchError(f"--level must be in (0.5, 1), got {self.level}")

    @property
    def alpha(self) -> float:
        return 1.0 - self.level

    def describe(self) -> str:
        if self.mode == "point":
            return ("decisions on point estimates (--decision point); the ΔSS interval is a paired bootstrap over "
                    "the shared calibration/test splits (split noise only)")
        return (f"pass = every limit shown held, fail = a limit shown broken, by one-sided {self.level:.0%} "
                f"item-level confidence bounds, family = every (cell, limit) of this run, "
                f"{PROCEDURE_TEXT[self.multiplicity]}; inconclusive cells "
                + ("fail the gate" if self.on_inconclusive == "fail" else "only warn"))


@dataclass
class GateReport:
    rows: pd.DataFrame
    limits: Limits
    baseline_skipped: list[Skipped] = field(default_factory=list)
    candidate_skipped: list[Skipped] = field(default_factory=list)
    baseline_records: int = 0
    candidate_records: int = 0
    sample_data: bool = False
    decision: Decision = field(default_factory=Decision)
    allow_undecided: bool = False  # --allow-undecided: a report with no decided cell may pass

    @property
    def decided(self) -> int:
        """Cells with a verdict (pass or fail)."""
        return int(self.rows["status"].isin(("pass", "fail")).sum())

    @property
    def failing_statuses(self) -> tuple[str, ...]:
        out = ["fail"]
        if not self.limits.allow_missing:
            out.append("missing")
        if self.decision.on_inconclusive == "fail":
            out.append("inconclusive")
        return tuple(out)

    @property
    def failed(self) -> bool:
        if self.decided == 0 and not self.allow_undecided:
            return True
        return bool(self.rows["status"].isin(self.failing_statuses).any())

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def _load(path: str | os.PathLike, side: str) -> tuple[pd.DataFrame, list[Skipped]]:
    p = Path(path)
    if not p.exists():
        raise CpbenchError(f"--{side} {p}: no such file or directory")
    df, skipped = load_results(p, strict=True)  # a damaged or impossible record is bad input (exit 2), not a skip
    if df.empty:
        why = f" ({skipped[0].path}: {skipped[0].reason})" if skipped else ""
        raise CpbenchError(f"--{side} {p}: no cpbench result records{why}")
    return df, skipped


def _checks(base: pd.Series, cand: pd.Series, limits: Limits) -> list[str]:
    """Point-mode reasons (decision="point")."""
    reasons = []
    d_ss = float(cand["set_size"]) - float(base["set_size"])
    if limits.max_set_size_increase is not None and d_ss > limits.max_set_size_increase + EDGE_TOL:
        reasons.append(f"set size +{d_ss:.3f} > {limits.max_set_size_increase:g}")
    if limits.min_coverage is not None and float(cand["coverage"]) < limits.min_coverage - EDGE_TOL:
        reasons.append(f"coverage {float(cand['coverage']):.4f} < {limits.min_coverage:g}")
    drop = float(base["acc"]) - float(cand["acc"])
    if limits.max_accuracy_drop is not None and drop > limits.max_accuracy_drop + EDGE_TOL:
        reasons.append(f"accuracy drop {drop:.4f} > {limits.max_accuracy_drop:g}")
    return reasons


@dataclass
class _Check:
    row: int
    name: str  # what the message calls it
    test: Directional
    good_below: bool  # within the limit means below the margin
    fmt: str


def _cell_checks(i: int, base: pd.Series, cand: pd.Series, limits: Limits, est: dict[str, Estimate]) -> list[_Check]:
    score = str(cand["score"])
    out = []
    if limits.max_set_size_increase is not None:
        out.append(_Check(i, "set size", Directional.test(est.get(f"d_{score}.set_size"),
                                                          limits.max_set_size_increase), True, "+.3f"))
    if limits.max_accuracy_drop is not None:
        e = est.get("d_acc")
        drop = None if e is None else e.negated("accuracy drop")
        out.append(_Check(i, "accuracy drop", Directional.test(drop, limits.max_accuracy_drop), True, ".4f"))
    if limits.min_coverage is not None:
        out.append(_Check(i, "coverage", Directional.test(est.get(f"cand.{score}.coverage"), limits.min_coverage),
                          False, ".4f"))
    if limits.max_flip_rate is not None:
        out.append(_Check(i, "flip rate", Directional.test(est.get("flip_cw"), limits.max_flip_rate), True, ".4f"))
    return out


def check_levels(pvalues: list[float], decision: Decision) -> list[float]:
    """The one-sided level each check is decided at (`decisions.decision_levels`)."""
    return decision_levels(pvalues, decision.alpha, decision.multiplicity)


def _pct(level: float) -> str:
    txt = f"{100 * level:.2f}".rstrip("0").rstrip(".")
    return f"{txt}%"


def _decide(rows: list[dict], checks: list[_Check], decision: Decision) -> None:
    """Statuses of the compared rows from the adjusted one-sided tests (in place). Every reason names the one-sided
    level of the bound it shows, the bound at the level the multiplicity procedure decided that check at."""
    pvals = [c.test.p for c in checks]
    p_adj = adjust(pvals, decision.multiplicity)
    levels = check_levels(pvals, decision)
    per_row: dict[int, list[tuple[_Check, float, float]]] = {}
    for c, pa, lv in zip(checks, p_adj, levels):
        per_row.setdefault(c.row, []).append((c, pa, lv))
    for i, items in per_row.items():
        row = rows[i]
        beyond, undecided, within = [], [], []
        for c, pa, lvl in items:
            t, e = c.test, c.test.estimate
            if e is None or not e.ok:
                undecided.append(f"{c.name}: {row.get('_why') or 'no estimate'}")
                continue
            lim = f"{t.margin:g}"
            if c.name == "set size":  # the table shows the bounds that decided, at the level that decided
                row.update(ss_bound_lo=e.bound("lower", lvl), ss_bound_hi=e.bound("upper", lvl), bound_level=lvl)
            shown = decided(pa, decision.alpha)
            good = t.below == c.good_below
            if shown and good:
                within.append(c.name)
            elif shown:
                op = ">" if c.good_below else "<"
                side = "lower" if c.good_below else "upper"
                other = e.bound(side, lvl)
                beyond.append(f"{c.name} {format(e.point, c.fmt)} {op} {lim} (one-sided {_pct(lvl)} {side} bound "
                              f"{format(other, c.fmt)})")
            else:
                need_txt = f"{fmt_more_items(t.items_needed(1.0 - lvl), e.n)} would likely decide it"
                lo_b, hi_b = e.bound("lower", lvl), e.bound("upper", lvl)
                undecided.append(f"{c.name} {format(e.point, c.fmt)} vs {lim} undecided (one-sided {_pct(lvl)} "
                                 f"bounds [{format(lo_b, c.fmt)}, {format(hi_b, c.fmt)}]; {need_txt})")
        if beyond:
            row.update(status="fail", reasons="; ".join(beyond + undecided))
        elif undecided:
            row.update(status="inconclusive", reasons="; ".join(undecided))
        else:
            row.update(status="pass", reasons="")


def compare(baseline: pd.DataFrame, candidate: pd.DataFrame, limits: Limits, seed: int = 0,
            decision: Decision | None = None, base_artifacts: ArtifactIndex | None = None,
            cand_artifacts: ArtifactIndex | None = None) -> pd.DataFrame:
    """One row per compared (or missing/new) cell, sorted; see the module docstring for the rules."""
    decision = decision or Decision(mode="point")
    cols = [*KEY_COLS, "baseline_recipe", "acc_base", "acc", "d_acc", "d_acc_lo", "d_acc_hi", "set_size_base",
            "set_size", "d_set_size", "d_set_size_lo", "d_set_size_hi", "coverage_base", "coverage", "d_coverage",
            "flip_cw", "flip_cw_lo", "flip_cw_hi", "status", "reasons", "sample_data", "ss_bound_lo", "ss_bound_hi",
            "bound_level"]
    base_groups = {k: g for k, g in baseline.groupby(CELL_COLS, sort=False, dropna=False)}
    rows, used = [], set()
    checks: list[_Check] = []
    for _, cand in candidate.iterrows():
        cell = tuple(cand[c] for c in CELL_COLS)
        g = base_groups.get(cell)
        if g is not None and len(g) > 1:
            g = g[g["recipe"] == cand["recipe"]]
        row = {c: cand[c] for c in KEY_COLS}
        if g is None or g.empty:
            row.update(status="new", reasons="no baseline result for this cell", acc=cand["acc"],
                       set_size=cand["set_size"], coverage=cand["coverage"], sample_data=bool(cand["sample_data"]))
            rows.append(row)
            continue
        base = g.iloc[0]
        used.add((cell, base["recipe"]))
        problem = pairing_problem(base, cand)
        if problem:
            raise CpbenchError(
                f"cannot compare {cand['model']}/{cand['recipe']}/{cand['task']}/{cand['score']} with baseline "
                f"{base['recipe']}: {problem}"
            )
        row.update(
            baseline_recipe=base["recipe"],
            acc_base=float(base["acc"]), acc=float(cand["acc"]), d_acc=float(cand["acc"]) - float(base["acc"]),
            set_size_base=float(base["set_size"]), set_size=float(cand["set_size"]),
            d_set_size=float(cand["set_size"]) - float(base["set_size"]),
            coverage_base=float(base["coverage"]), coverage=float(cand["coverage"]),
            d_coverage=float(cand["coverage"]) - float(base["coverage"]),
            sample_data=bool(base["sample_data"]) or bool(cand["sample_data"]),
        )
        if decision.mode == "point":
            lo = hi = math.nan
            if base["ps_set_size"] is not None and cand["ps_set_size"] is not None and len(
                    base["ps_set_size"]) == len(cand["ps_set_size"]):
                _, lo, hi = paired_bootstrap(cand["ps_set_size"], base["ps_set_size"], seed=seed)
            reasons = _checks(base, cand, limits)
            row.update(d_set_size_lo=lo, d_set_size_hi=hi, status="fail" if reasons else "pass",
                       reasons="; ".join(reasons))
        else:
            est, why = _item_estimates(base, cand, decision, base_artifacts, cand_artifacts)
            row.update(_why=why, status="pass", reasons="")  # no limit set: nothing to break
            for key, e in (("d_set_size", est.get(f"d_{cand['score']}.set_size")), ("d_acc", est.get("d_acc")),
                           ("flip_cw", est.get("flip_cw"))):
                if e is not None:
                    row[f"{key}_lo"] = e.bound("lower", decision.level)
                    row[f"{key}_hi"] = e.bound("upper", decision.level)
                    if key == "flip_cw":
                        row[key] = e.point
            checks += _cell_checks(len(rows), base, cand, limits, est)
        rows.append(row)
    if decision.mode == "interval":
        _decide(rows, checks, decision)
    for row in rows:
        row.pop("_why", None)
    for _, base in baseline.iterrows():  # baseline rows no candidate was compared with
        if (tuple(base[c] for c in CELL_COLS), base["recipe"]) in used:
            continue
        row = {c: base[c] for c in KEY_COLS}
        row.update(baseline_recipe=base["recipe"], acc_base=float(base["acc"]), set_size_base=float(base["set_size"]),
                   coverage_base=float(base["coverage"]), status="missing",
                   reasons="baseline cell has no candidate result", sample_data=bool(base["sample_data"]))
        rows.append(row)
    out = pd.DataFrame(rows, columns=cols)
    if not (out["status"].isin(["pass", "fail", "inconclusive"])).any():
        raise CpbenchError("no candidate result matches a baseline result (different models, tasks, prompts or "
                           "analysis keys?)")
    return out.sort_values([*KEY_COLS], kind="mergesort").reset_index(drop=True)


def _item_estimates(base: pd.Series, cand: pd.Series, decision: Decision, base_artifacts: ArtifactIndex | None,
                    cand_artifacts: ArtifactIndex | None) -> tuple[dict[str, Estimate], str]:
    if base_artifacts is None or cand_artifacts is None:
        return {}, "no item-level interval: artifact not found"
    (ab, why_b), (ac, why_c) = base_artifacts.for_row(base), cand_artifacts.for_row(cand)
    if ab is None or ac is None:
        return {}, (why_b if ab is None else why_c) + f" ({'baseline' if ab is None else 'candidate'})"
    try:
        est = compare_numbers(ab, ac, RecordNumbers.from_rows([base]), RecordNumbers.from_rows([cand]),
                              (str(cand["score"]),), n_boot=decision.n_boot, seed=decision.seed,
                              set_pairs=False)  # no gate limit reads the set diagnostics (half the cost)
    except CpbenchError as exc:
        return {}, f"no item-level interval: {exc}"
    return est, ""


def run_gate(baseline: str | os.PathLike, candidate: str | os.PathLike, limits: Limits,
             decision: Decision | None = None) -> GateReport:
    """Load both sides and decide. `decision` defaults to item-level intervals (Decision())."""
    decision = decision or Decision()
    bdf, bskip = _load(baseline, "baseline")
    cdf, cskip = _load(candidate, "candidate")
    rows = compare(bdf, cdf, limits, seed=decision.seed, decision=decision,
                   base_artifacts=ArtifactIndex(baseline), cand_artifacts=ArtifactIndex(candidate))
    return GateReport(
        rows=rows, limits=limits, baseline_skipped=bskip, candidate_skipped=cskip,
        baseline_records=int(bdf["path"].nunique()), candidate_records=int(cdf["path"].nunique()),
        sample_data=bool(bdf["sample_data"].any() or cdf["sample_data"].any()), decision=decision,
    )


# ------------------------------------------------------------------------------------------------- rendering
def _f(x: object, fmt: str) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _cells(report: GateReport) -> list[list[str]]:
    out = []
    for _, r in report.rows.iterrows():
        lo, hi = r["d_set_size_lo"], r["d_set_size_hi"]
        if "ss_bound_lo" in r and not pd.isna(r["ss_bound_lo"]):  # interval mode: the bounds that decided (why column)
            lo, hi = r["ss_bound_lo"], r["ss_bound_hi"]
        ci = "" if pd.isna(lo) else f"[{lo:+.3f}, {hi:+.3f}]"
        failing = r["status"] in report.failing_statuses
        out.append([
            str(r["model"]), str(r["recipe"]), str(r["baseline_recipe"]) if isinstance(r["baseline_recipe"], str)
            else "", str(r["task"]), str(r["score"]),
            _f(r["acc_base"], ".4f"), _f(r["acc"], ".4f"), _f(r["d_acc"], "+.4f"),
            _f(r["set_size_base"], ".3f"), _f(r["set_size"], ".3f"), _f(r["d_set_size"], "+.3f"), ci,
            _f(r["coverage"], ".4f"), r["status"].upper() if failing else r["status"],
            str(r["reasons"]) if isinstance(r["reasons"], str) else "",
        ])
    return out


HEADER = ["model", "recipe", "vs", "task", "score", "acc base", "acc", "Δacc", "SS base", "SS", "ΔSS",
          "ΔSS bounds", "coverage", "status", "why"]


def _header(report: GateReport) -> list[str]:
    h = list(HEADER)
    # interval mode: the one-sided bounds at the level that decided (named in the header lines), as in 'why'
    h[11] = "ΔSS 95% split interval" if report.decision.mode == "point" else "ΔSS bounds (decided)"
    return h


def _verdict(report: GateReport) -> str:
    counts = report.rows["status"].value_counts()
    keys = ["pass", "fail", *(["inconclusive"] if report.decision.mode == "interval" else []), "missing", "new"]
    summary = ", ".join(f"{k} {int(counts.get(k, 0))}" for k in keys)
    none = "; no cell decided" + (" (--allow-undecided)" if report.allow_undecided else
                                  ", which never passes (--allow-undecided accepts it)")
    return f"{'FAIL' if report.failed else 'PASS'} ({summary}{none if report.decided == 0 else ''})"


def _bounds_text(report: GateReport) -> str:
    if report.decision.mode == "point":
        return "ΔSS bounds: 95 % paired bootstrap interval over the shared splits (split noise only)"
    levels = report.rows["bound_level"].dropna() if "bound_level" in report.rows else pd.Series(dtype=float)
    if len(levels):  # what decided: the bounds at the adjusted level (the same numbers as the why column)
        adj = "" if report.decision.multiplicity == "none" else f" after the {report.decision.multiplicity} adjustment"
        return (f"ΔSS bounds: one-sided {float(levels.iloc[0]):.2%} item-level lower and upper confidence bounds "
                f"(the level that decided{adj}; the same bounds as the why column)")
    return (f"ΔSS bounds: one-sided {report.decision.level:.0%} item-level lower and upper confidence bounds "
            "(before the multiplicity adjustment)")


def text_table(report: GateReport) -> str:
    rows = [_header(report), *_cells(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    head = [f"cpbench check: {_verdict(report)}", f"limits: {report.limits.describe()}",
            f"decision: {report.decision.describe()}", _bounds_text(report)]
    if report.sample_data:
        head.append("note: some results come from sample data (offline smoke-test items), not benchmark items")
    for side, skipped in (("baseline", report.baseline_skipped), ("candidate", report.candidate_skipped)):
        head += [f"warning: {side}: skipped {s.path}: {s.reason}" for s in skipped]
    return "\n".join(head + [""] + lines) + "\n"


def markdown_summary(report: GateReport) -> str:
    icon = "❌" if report.failed else "✅"
    lines = [
        f"### {icon} cpbench check: {_verdict(report)}",
        "",
        (
            f"Limits: {report.limits.describe()}. Baseline: {report.baseline_records} records; candidate: "
            f"{report.candidate_records} records. Decision: {report.decision.describe()}. {_bounds_text(report)}."
        ),
        "",
    ]
    if report.sample_data:
        lines += ["> ⚠ Some results come from sample data (offline smoke-test items), not benchmark items.", ""]
    lines.append("| " + " | ".join(_header(report)) + " |")
    lines.append("|" + "|".join("---" for _ in HEADER) + "|")
    for cells in _cells(report):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    skipped = [*report.baseline_skipped, *report.candidate_skipped]
    if skipped:
        lines += ["", "Skipped files:", *(f"- `{s.path}`: {s.reason}" for s in skipped)]
    return "\n".join(lines) + "\n"


def junit_xml(report: GateReport) -> str:
    r = report.rows
    failing = set(report.failing_statuses)
    suite = ET.Element("testsuite", {
        "name": "cpbench check",
        "tests": str(len(r)),
        "failures": str(int(r["status"].isin(failing).sum())),
        "errors": "0",
        "skipped": str(int(r["status"].isin({"new", "missing", "inconclusive"} - failing).sum())),
    })
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", {"name": "limits", "value": report.limits.describe()})
    ET.SubElement(props, "property", {"name": "decision", "value": report.decision.describe()})
    for _, row in r.iterrows():
        case = ET.SubElement(suite, "testcase", {
            "classname": f"cpbench.{row['model']}.{row['task']}",
            "name": f"{row['recipe']} {row['score']} {row['prompt']} {row['shots']}shot",
        })
        if row["status"] in failing:
            ET.SubElement(case, "failure", {"message": row["reasons"], "type": row["status"]}).text = (
                f"baseline {row['baseline_recipe'] if isinstance(row['baseline_recipe'], str) else '-'}: "
                f"set size {_f(row['set_size_base'], '.3f')} -> {_f(row['set_size'], '.3f')}, "
                f"accuracy {_f(row['acc_base'], '.4f')} -> {_f(row['acc'], '.4f')}, "
                f"coverage {_f(row['coverage'], '.4f')}"
            )
        elif row["status"] in ("new", "missing", "inconclusive"):
            ET.SubElement(case, "skipped", {"message": row["reasons"]})
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
