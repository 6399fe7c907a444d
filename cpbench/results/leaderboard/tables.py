"""Leaderboard tables: the same rows rendered as Markdown, CSV and LaTeX, deterministically.

Every `Table` carries a display frame (formatted strings, for Markdown, LaTeX and HTML), a data frame (numbers,
for CSV) and a provenance line naming the records it was computed from and whether any are sample data or carry
model notes. Rows are sorted; floats are formatted with fixed precision; nothing depends on the clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from cpbench.results.analysis.aggregate import AVG
from cpbench.results.store import ANALYSIS_KEY_COLS, SCORE_KEY_COLS, split_notes

SETTING_COLS = [c for c in SCORE_KEY_COLS if c not in ("model", "recipe", "task")] + list(ANALYSIS_KEY_COLS)
CSV_FLOAT = "%.6f"


@dataclass
class Table:
    name: str  # file stem
    title: str
    display: pd.DataFrame  # strings
    data: pd.DataFrame  # numbers, for CSV
    provenance: str  # which records, sample-data/notes label
    legend: list[str] = field(default_factory=list)  # lines printed under the table

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", f"_{self.provenance}_", ""]
        if self.display.empty:
            lines.append("(no rows)")
        else:
            cols = [str(c) for c in self.display.columns]
            lines.append("| " + " | ".join(_md(c) for c in cols) + " |")
            lines.append("|" + "|".join("---" for _ in cols) + "|")
            for row in self.display.itertuples(index=False):
                lines.append("| " + " | ".join(_md(str(v)) for v in row) + " |")
        lines += ["", *(f"{line}  " for line in self.legend)] if self.legend else []
        return "\n".join(lines).rstrip() + "\n"

    def csv(self) -> str:
        return self.data.to_csv(index=False, float_format=CSV_FLOAT, lineterminator="\n")

    def latex(self) -> str:
        cols = [str(c) for c in self.display.columns]
        out = [
            "\\begin{table}[ht]",
            "\\centering\\scriptsize",
            f"\\caption{{{_tex(self.title)}. {_tex(self.provenance)}}}",
            f"\\label{{tab:cpbench-{self.name}}}",
            "\\begin{tabular}{" + "l" * max(len(cols), 1) + "}",
            "\\toprule",
            " & ".join(_tex(c) for c in cols) + " \\\\",
            "\\midrule",
        ]
        out += [" & ".join(_tex(str(v)) for v in row) + " \\\\" for row in self.display.itertuples(index=False)]
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
        return "\n".join(out)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_TEX = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_", "{": "\\{",
        "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}", "<": "\\textless{}", ">": "\\textgreater{}",
        "Δ": "$\\Delta$", "τ": "$\\tau$", "±": "$\\pm$", "⚠": "(!)"}


def _tex(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


# --------------------------------------------------------------------------------------------------- formatting
def pct(x: float) -> str:
    return "" if _nan(x) else f"{100.0 * x:.2f}"


def num(x: float, digits: int = 3) -> str:
    return "" if _nan(x) else f"{x:.{digits}f}"


def signed(x: float, digits: int = 3, scale: float = 1.0) -> str:
    return "" if _nan(x) else f"{scale * x:+.{digits}f}"


def interval(lo: float, hi: float, digits: int = 3, scale: float = 1.0) -> str:
    return "" if _nan(lo) or _nan(hi) else f"[{scale * lo:+.{digits}f}, {scale * hi:+.{digits}f}]"


def _nan(x: object) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


# ------------------------------------------------------------------------------------------------ provenance
class Provenance:
    """Labels rows from sample data or with model notes, and names the records behind each table."""

    def __init__(self, results: pd.DataFrame, root_label: str):
        self.root = root_label
        real = results[results["task"] != AVG]
        self.n_records = int(real["path"].nunique())
        self.notes = sorted({n for cell in real["notes"] for n in split_notes(cell)})
        self.any_sample = bool(real["sample_data"].any())

    def flags(self, sample: bool, notes: str) -> str:
        marks = ["sample"] if sample else []
        marks += [f"n{i + 1}" for i in sorted(self.notes.index(n) for n in split_notes(notes) if n in self.notes)]
        return " ".join(marks)

    def line(self, frame: pd.DataFrame) -> str:
        sample = bool(frame["sample_data"].any()) if "sample_data" in frame and len(frame) else False
        has_notes = bool(frame["notes"].astype(bool).any()) if "notes" in frame and len(frame) else False
        parts = [f"Source: {self.n_records} result records under `{self.root}` (listed in the Provenance table)."]
        if sample:
            parts.append("⚠ SAMPLE DATA: rows flagged `sample` come from the offline smoke-test samples, not the "
                         "benchmark items; do not cite them as results.")
        if has_notes:
            parts.append("Rows flagged n1, n2, ... carry model notes (see the legend), e.g. a baseline that was "
                         "already quantized.")
        return " ".join(parts)

    def legend(self) -> list[str]:
        return [f"n{i + 1}: {n}" for i, n in enumerate(self.notes)]


def varying_settings(results: pd.DataFrame) -> tuple[list[str], str]:
    """Setting columns that differ across the frame (shown as columns) and a sentence naming the constant ones."""
    varying = [c for c in SETTING_COLS if results[c].astype(str).nunique() > 1] if len(results) else []
    const = [c for c in SETTING_COLS if c not in varying]
    if not len(results):
        return varying, ""
    first = results.iloc[0]
    return varying, "Settings: " + ", ".join(f"{c} {first[c] if str(first[c]) else '-'}" for c in const) + "."
