"""Decisions from intervals: one-sided tests against margins, multiplicity control, and "items needed".

Every statement cpbench makes about a difference ("accuracy kept within epsilon", "set size grows beyond delta",
"the regression is within the gate's limit") is a one-sided test of an `Estimate` against a margin. A pair of
opposite statements about one quantity ("kept" / "dropped") is one directional decision: its p-value is the smaller
of the two one-sided p-values, and only that direction can be claimed (at most one of the two nulls is false, so the
pair contributes at most one false claim). The p-values of a whole table (or a whole gate run) form one family and are
adjusted together:

- `holm`: Holm's step-down procedure, family-wise error rate <= alpha under any dependence (Holm 1979);
- `bonferroni`: p * m, the same guarantee, less power;
- `bh`: Benjamini-Hochberg step-up, false discovery rate <= alpha (independent or positively dependent tests;
  Benjamini & Hochberg 1995), for exploratory tables;
- `none`: each statement at level alpha on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from cpbench.results.analysis.estimate import Estimate
from cpbench.base.errors import CpbenchError

Procedure = Literal["holm", "bonferroni", "bh", "none"]
PROCEDURES = ("holm", "bonferroni", "bh", "none")
PROCEDURE_TEXT = {
    "holm": "Holm step-down (family-wise error rate)",
    "bonferroni": "Bonferroni (family-wise error rate)",
    "bh": "Benjamini-Hochberg (false discovery rate)",
    "none": "no multiplicity adjustment",
}


def check_procedure(name: str) -> str:
    if name not in PROCEDURES:
        raise CpbenchError(f"unknown multiplicity procedure {name!r} (choose from {', '.join(PROCEDURES)})")
    return name


def adjust(pvalues: Sequence[float], procedure: str = "holm") -> np.ndarray:
    """Adjusted p-values (NaN entries stay NaN and do not count in the family size)."""
    check_procedure(procedure)
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, math.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    q = p[ok]
    if procedure == "none":
        adj = q
    elif procedure == "bonferroni":
        adj = np.minimum(1.0, q * m)
    elif procedure == "holm":
        order = np.argsort(q, kind="stable")
        stepped = np.maximum.accumulate((m - np.arange(m)) * q[order])
        adj = np.empty(m)
        adj[order] = np.minimum(1.0, stepped)
    else:  # bh
        order = np.argsort(q, kind="stable")
        ranked = q[order] * m / np.arange(1, m + 1)
        stepped = np.minimum.accumulate(ranked[::-1])[::-1]
        adj = np.empty(m)
        adj[order] = np.minimum(1.0, stepped)
    out[ok] = adj
    return out


@dataclass(frozen=True)
class Directional:
    """One quantity against one margin: which side the data point to, and the p-value for claiming that side."""

    below: bool  # the data point below the margin
    p: float  # one-sided p-value for claiming that side (NaN: no estimate)
    estimate: Estimate | None
    margin: float

    @classmethod
    def test(cls, est: Estimate | None, margin: float) -> "Directional":
        if est is None or not est.ok:
            return cls(False, math.nan, est, margin)
        pb, pa = est.p_below(margin), est.p_above(margin)
        return cls(pb <= pa, min(pb, pa), est, margin)

    def items_needed(self, alpha: float, power: float = 0.8) -> float:
        if self.estimate is None or not self.estimate.ok:
            return math.nan
        return self.estimate.items_to_decide(self.margin, 1.0 - alpha, power)


def decided(p_adjusted: float, alpha: float) -> bool:
    return math.isfinite(p_adjusted) and p_adjusted <= alpha


def fmt_items(n: float) -> str:
    if not math.isfinite(n):
        return "an unbounded number of items (the estimate sits on the margin)"
    if n >= 1e6:
        return "more than 1,000,000 items"
    # two significant digits: this is a rough planning figure, not a promise
    digits = max(0, int(math.floor(math.log10(max(n, 1)))) - 1)
    rounded = int(math.ceil(n / 10**digits) * 10**digits)
    return f"about {rounded:,} items"


def fmt_more_items(needed: float, have: int) -> str:
    """'about 1,200 more items (1,300 in all)': how many more items would likely decide a cell (80 % power if the
    estimate were the truth), from the cell's own per-item variance."""
    if math.isnan(needed):
        return "an unknown number of items (no per-item variance)"
    if not math.isfinite(needed):
        return "an unbounded number of items (the estimate sits on the margin)"
    more = needed - have
    if more <= 0:
        return f"{fmt_items(needed)} (about as many as it has: another sample of this size may decide it)"
    return f"{fmt_items(more).replace(' items', '')} more items ({fmt_items(needed).removeprefix('about ')} in all)"


def decision_levels(pvalues: Sequence[float], alpha: float, procedure: str = "holm") -> list[float]:
    """The one-sided confidence level each test of a family is decided at, so that a printed bound says what
    decided: Holm compares the j-th smallest of m p-values with alpha / (m - j + 1) (bound at 1 - alpha / (m - j +
    1)); Bonferroni with alpha / m; Benjamini-Hochberg the j-th smallest with alpha j / m; none with alpha. A test
    shown (its adjusted p-value <= alpha) has its bound at this level beyond its margin."""
    check_procedure(procedure)
    p = np.asarray(pvalues, dtype=float)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    out = [1.0 - alpha] * len(p)
    if procedure == "none" or m == 0:
        return out
    if procedure == "bonferroni":
        return [1.0 - alpha / m] * len(p)
    order = ok[np.argsort(p[ok], kind="stable")]
    for j, i in enumerate(order):
        out[int(i)] = 1.0 - (alpha / (m - j) if procedure == "holm" else alpha * (j + 1) / m)
    return out
