"""The CI gate: compare candidate results with baseline results and fail when uncertainty regresses past limits.

Matching: a candidate row (model, task, prompt, shots, chat, scoring, data, analysis key, conformal score) is compared
with the baseline side's row for the same cell. When the baseline side holds one recipe for that cell (typically the
base results, or the previous version of a recipe) that row is the baseline whatever the candidate's recipe; when it
holds several, the recipe must match too (a results tree from main against a PR's results tree).

Verdicts per matched cell, on point estimates (the paired interval is shown beside them):
- set-size increase  cand - base  >  max_set_size_increase   -> fail
- candidate coverage              <  min_coverage            -> fail
- accuracy drop      base - cand  >  max_accuracy_drop       -> fail
A baseline cell with no candidate row is `missing` (a failure unless allow_missing); a candidate cell with no
baseline is `new` (reported, not failed). Bad input (no records, nothing matched, different item sets) raises
CpbenchError, which the CLI turns into exit 2.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cpbench.analysis.decoupling import CELL_COLS, EDGE_TOL, pairing_problem
from cpbench.analysis.stats import paired_bootstrap
from cpbench.errors import CpbenchError
from cpbench.store import KEY_COLS, Skipped, load_results


@dataclass(frozen=True)
class Limits:
    max_set_size_increase: float | None = 0.25
    min_coverage: float | None = None
    max_accuracy_drop: float | None = None
    allow_missing: bool = False

    def __post_init__(self) -> None:
        if self.max_set_size_increase is not None and not self.max_set_size_increase >= 0:  # NaN too: it passes all
            raise CpbenchError(f"--max-set-size-increase must be >= 0, got {self.max_set_size_increase}")
        if self.min_coverage is not None and not 0.0 <= self.min_coverage <= 1.0:
            raise CpbenchError(f"--min-coverage must be in [0, 1], got {self.min_coverage}")
        if self.max_accuracy_drop is not None and not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise CpbenchError(f"--max-accuracy-drop must be in [0, 1], got {self.max_accuracy_drop}")

    def describe(self) -> str:
        parts = []
        parts.append("set-size increase <= " + (f"{self.max_set_size_increase:g} options"
                                                 if self.max_set_size_increase is not None else "unchecked"))
        parts.append("coverage >= " + (f"{self.min_coverage:g}" if self.min_coverage is not None else "unchecked"))
        parts.append("accuracy drop <= " + (f"{self.max_accuracy_drop:g}" if self.max_accuracy_drop is not None
                                            else "unchecked"))
        return "; ".join(parts)


@dataclass
class GateReport:
    rows: pd.DataFrame
    limits: Limits
    baseline_skipped: list[Skipped] = field(default_factory=list)
    candidate_skipped: list[Skipped] = field(default_factory=list)
    baseline_records: int = 0
    candidate_records: int = 0
    sample_data: bool = False

    @property
    def failing_statuses(self) -> tuple[str, ...]:
        return ("fail",) if self.limits.allow_missing else ("fail", "missing")

    @property
    def failed(self) -> bool:
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


def compare(baseline: pd.DataFrame, candidate: pd.DataFrame, limits: Limits, seed: int = 0) -> pd.DataFrame:
    """One row per compared (or missing/new) cell, sorted; see the module docstring for the rules."""
    cols = [*KEY_COLS, "baseline_recipe", "acc_base", "acc", "d_acc", "set_size_base", "set_size", "d_set_size",
            "d_set_size_lo", "d_set_size_hi", "coverage_base", "coverage", "d_coverage", "status", "reasons",
            "sample_data"]
    base_groups = {k: g for k, g in baseline.groupby(CELL_COLS, sort=False, dropna=False)}
    rows, used = [], set()
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
        lo = hi = math.nan
        if base["ps_set_size"] is not None and cand["ps_set_size"] is not None and len(base["ps_set_size"]) == len(
            cand["ps_set_size"]
        ):
            _, lo, hi = paired_bootstrap(cand["ps_set_size"], base["ps_set_size"], seed=seed)
        reasons = _checks(base, cand, limits)
        row.update(
            baseline_recipe=base["recipe"],
            acc_base=float(base["acc"]), acc=float(cand["acc"]), d_acc=float(cand["acc"]) - float(base["acc"]),
            set_size_base=float(base["set_size"]), set_size=float(cand["set_size"]),
            d_set_size=float(cand["set_size"]) - float(base["set_size"]), d_set_size_lo=lo, d_set_size_hi=hi,
            coverage_base=float(base["coverage"]), coverage=float(cand["coverage"]),
            d_coverage=float(cand["coverage"]) - float(base["coverage"]),
            status="fail" if reasons else "pass", reasons="; ".join(reasons),
            sample_data=bool(base["sample_data"]) or bool(cand["sample_data"]),
        )
        rows.append(row)
    for _, base in baseline.iterrows():  # baseline rows no candidate was compared with
        if (tuple(base[c] for c in CELL_COLS), base["recipe"]) in used:
            continue
        row = {c: base[c] for c in KEY_COLS}
        row.update(baseline_recipe=base["recipe"], acc_base=float(base["acc"]), set_size_base=float(base["set_size"]),
                   coverage_base=float(base["coverage"]), status="missing",
                   reasons="baseline cell has no candidate result", sample_data=bool(base["sample_data"]))
        rows.append(row)
    out = pd.DataFrame(rows, columns=cols)
    if not (out["status"].isin(["pass", "fail"])).any():
        raise CpbenchError("no candidate result matches a baseline result (different models, tasks, prompts or "
                           "analysis keys?)")
    return out.sort_values([*KEY_COLS], kind="mergesort").reset_index(drop=True)


def run_gate(baseline: str | os.PathLike, candidate: str | os.PathLike, limits: Limits) -> GateReport:
    bdf, bskip = _load(baseline, "baseline")
    cdf, cskip = _load(candidate, "candidate")
    rows = compare(bdf, cdf, limits)
    return GateReport(
        rows=rows, limits=limits, baseline_skipped=bskip, candidate_skipped=cskip,
        baseline_records=int(bdf["path"].nunique()), candidate_records=int(cdf["path"].nunique()),
        sample_data=bool(bdf["sample_data"].any() or cdf["sample_data"].any()),
    )


# ------------------------------------------------------------------------------------------------- rendering
def _f(x: object, fmt: str) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _cells(report: GateReport) -> list[list[str]]:
    out = []
    for _, r in report.rows.iterrows():
        ci = "" if pd.isna(r["d_set_size_lo"]) else f"[{r['d_set_size_lo']:+.3f}, {r['d_set_size_hi']:+.3f}]"
        out.append([
            str(r["model"]), str(r["recipe"]), str(r["baseline_recipe"]) if isinstance(r["baseline_recipe"], str)
            else "", str(r["task"]), str(r["score"]),
            _f(r["acc_base"], ".4f"), _f(r["acc"], ".4f"), _f(r["d_acc"], "+.4f"),
            _f(r["set_size_base"], ".3f"), _f(r["set_size"], ".3f"), _f(r["d_set_size"], "+.3f"), ci,
            _f(r["coverage"], ".4f"), r["status"].upper() if r["status"] in ("fail", "missing") else r["status"],
            str(r["reasons"]) if isinstance(r["reasons"], str) else "",
        ])
    return out


HEADER = ["model", "recipe", "vs", "task", "score", "acc base", "acc", "Δacc", "SS base", "SS", "ΔSS", "ΔSS 95% CI",
          "coverage", "status", "why"]


def _verdict(report: GateReport) -> str:
    counts = report.rows["status"].value_counts()
    summary = ", ".join(f"{k} {int(counts.get(k, 0))}" for k in ("pass", "fail", "missing", "new"))
    return f"{'FAIL' if report.failed else 'PASS'} ({summary})"


def text_table(report: GateReport) -> str:
    rows = [HEADER, *_cells(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    head = [f"cpbench check: {_verdict(report)}", f"limits: {report.limits.describe()}"]
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
            f"{report.candidate_records} records. Decisions use point estimates; the ΔSS interval is a paired "
            "bootstrap over the shared calibration/test splits."
        ),
        "",
    ]
    if report.sample_data:
        lines += ["> ⚠ Some results come from sample data (offline smoke-test items), not benchmark items.", ""]
    lines.append("| " + " | ".join(HEADER) + " |")
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
        "skipped": str(int(r["status"].isin({"new", "missing"} - failing).sum())),
    })
    ET.SubElement(ET.SubElement(suite, "properties"), "property", {"name": "limits",
                                                                  "value": report.limits.describe()})
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
        elif row["status"] in ("new", "missing"):
            ET.SubElement(case, "skipped", {"message": row["reasons"]})
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
