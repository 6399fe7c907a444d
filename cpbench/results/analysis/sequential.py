"""The sequential gate: group-sequential one-sided tests with alpha spending and a group-sequential Holm procedure.

Pure numpy (no torch). The CI gate (`cpbench.results.gate`) turns every (cell, limit) into a directional one-sided test of an
item-level estimate against the limit. A fixed-n gate scores N items and tests once. The sequential gate scores items
in stages of one fixed random order per task (n_1 < n_2 < ... < n_K = max_items items), re-tests after each stage,
and stops scoring a cell as soon as it is decided. Looking K times at level alpha would inflate the error, so:

- **Alpha spending** (Lan & DeMets 1983): each hypothesis i has a share alpha_i of the family's alpha and a spending
  function alpha_i(t), t = n / max_items the information fraction (the variance of every gate estimate falls as
  1 / n). At look k the one-sided critical value c_k solves
  P(Z_1 < c_1, ..., Z_{k-1} < c_{k-1}, Z_k >= c_k) = alpha_i(t_k) - alpha_i(t_{k-1}) under the canonical joint
  distribution of the z-statistics (Brownian motion in information time: Cov(Z_j, Z_k) = sqrt(t_j / t_k));
  computed exactly by the recursive numerical integration of Armitage, McPherson & Rowe (1969) / Jennison & Turnbull
  (2000, ch. 19) on a grid (`boundaries`). Boundaries are non-binding: the opposite-direction decision only stops
  earlier, which can only lower the probability of a false claim in this direction.
- **Which spending function**: `pocock` (Lan-DeMets Pocock-type, alpha * ln(1 + (e - 1) t)) by default: the gate's
  aim is the fewest items to a decision, and Pocock-type spending stops earliest on average (at a small cost in the
  final look's critical value); `obf` (O'Brien-Fleming-type, 2 - 2 Phi(z_{alpha/2} / sqrt t)) keeps the last look
  near the fixed-n test but rarely stops early; `linear` (alpha * t, Hwang-Shih-DeCani gamma = 0) sits between.
- **Many cells**: the family is every (cell, check) of the run, as in the fixed gate, with a group-sequential Holm
  procedure (Ye, Li, Liu & Yao 2013; Maurer & Bretz 2013, graphical approach with equal weights): every
  hypothesis starts at alpha / m; when one is decided at a look, its alpha_i is shared equally among the undecided
  ones, whose boundaries are recomputed for the whole schedule at their new level (same spending function), and the
  current look is re-tested. `bonferroni` keeps alpha / m.
- **Directions**: a check is "within" when z_within = Phi^-1(1 - p), p the check's own one-sided p-value that the
  limit holds (`z_within` below: (margin - estimate) / se for a normal estimate, the exact tail for a count), crosses
  c_k, "beyond" when it crosses -c_k, as the fixed gate decides either side at its level. At the limit the
  probability of a false "within" (a false pass) is at most alpha_i per hypothesis, at most alpha over the family.

- **Futility** (`Design.futility`, 0.05 for new runs): a check whose estimate shows a regression above none (z against
  0 for a set-size increase or an accuracy drop) beyond a beta-spending boundary of that level stops its cell as
  failed ("futile"). Non-binding: it never passes anything, so the false-pass level holds; it stops true regressions
  early at a small cost in power (docs/ci-gate.md, "Items to decision").

A cell is decided (stops scoring) when any of its checks is beyond or futile (fail) or all are within (pass); at the last look
the undecided cells are inconclusive. `Design` + `SequentialGate.look` are the whole procedure; the runner
(`cpbench.run.seqrun`) feeds them the gate's z-statistics of each stage and `cpbench check --until-decided` replays them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from statistics import NormalDist
from typing import Hashable, Mapping

import numpy as np

from cpbench.base.errors import CpbenchError

SPENDING = ("pocock", "obf", "linear")
DEFAULT_FIRST = 200  # items at the first look (a conformal split needs a few dozen calibration items)
DEFAULT_GROWTH = 1.5  # items grow by this factor from one look to the next
DEFAULT_FUTILITY = 0.05  # beta spent (same spending function) on failing a cell that shows a regression (futility)
_N = NormalDist()


def futility_level(value: float | None, flag: str = "--futility") -> float:
    """A futility level as given (`cpbench run --until-decided --futility`, `cpbench.evaluate(futility=)`, `cpbench
    check --futility`; None: DEFAULT_FUTILITY) -> float in [0, 0.5) (0: no futility stop); else one line."""
    if value is None:
        return DEFAULT_FUTILITY
    try:
        level = float(value)
    except (TypeError, ValueError):
        raise CpbenchError(f"{flag} must be a number in [0, 0.5), got {value!r}") from None
    if isinstance(value, bool) or not 0.0 <= level < 0.5:  # NaN fails the comparison too
        raise CpbenchError(f"{flag} must be in [0, 0.5) (the one-sided level of the futility stop; 0 turns it off), "
                           f"got {value}")  # fmt: skip
    return level


def _phi_cdf(x: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import ndtr  # fast path when SciPy is installed (it is not a dependency)

        return ndtr(np.asarray(x, dtype=np.float64))
    except ImportError:  # pragma: no cover
        return 0.5 * np.frompyfunc(math.erfc, 1, 1)(-np.asarray(x, dtype=np.float64) / math.sqrt(2.0)).astype(float)


def spent(t: float, alpha: float, kind: str = "pocock") -> float:
    """Alpha spent by information fraction t in [0, 1] (Lan & DeMets 1983; Hwang, Shih & DeCani 1990)."""
    t = min(max(float(t), 0.0), 1.0)
    if t <= 0.0:
        return 0.0
    if kind == "pocock":
        return alpha * math.log(1.0 + (math.e - 1.0) * t)
    if kind == "obf":
        return 2.0 - 2.0 * _N.cdf(_N.inv_cdf(1.0 - alpha / 2.0) / math.sqrt(t))
    if kind == "linear":
        return alpha * t
    raise CpbenchError(f"unknown spending function {kind!r} (use {', '.join(SPENDING)})")


@lru_cache(maxsize=4096)
def boundaries(fractions: tuple[float, ...], alpha: float, kind: str = "pocock", grid: int = 801) -> tuple[float, ...]:
    """One-sided upper critical values c_1..c_K (z scale) of a group-sequential test at the information fractions
    `fractions` (increasing, last 1) spending `alpha` with `kind`: exact for the canonical joint distribution, by
    recursive numerical integration of the sub-density of the score S_k = Z_k sqrt(t_k) on the continuation region."""
    t = np.asarray(fractions, dtype=np.float64)
    if len(t) == 0 or np.any(np.diff(t) <= 0) or t[0] <= 0 or abs(t[-1] - 1.0) > 1e-9:
        raise CpbenchError(f"information fractions must increase to 1, got {fractions}")
    if not 0.0 < alpha < 1.0:
        raise CpbenchError(f"alpha must be in (0, 1), got {alpha}")
    cum = [spent(x, alpha, kind) for x in t]
    inc = np.diff(np.concatenate([[0.0], cum]))
    out: list[float] = []
    # look 1: Z_1 ~ N(0, 1)
    c1 = _N.inv_cdf(1.0 - inc[0]) if inc[0] > 0 else math.inf
    out.append(c1)
    if len(t) == 1:
        return tuple(out)
    sd1 = math.sqrt(t[0])
    hi = c1 * sd1 if math.isfinite(c1) else 8.0 * sd1
    lo = -8.0 * math.sqrt(t[-1])
    s = np.linspace(lo, hi, grid)
    w = np.full(grid, (hi - lo) / (grid - 1))
    w[0] *= 0.5
    w[-1] *= 0.5
    dens = np.exp(-0.5 * (s / sd1) ** 2) / (sd1 * math.sqrt(2 * math.pi))  # sub-density on (-inf, hi]
    for k in range(1, len(t)):
        d = math.sqrt(t[k] - t[k - 1])
        mass = dens * w

        def exit_prob(c: float) -> float:
            return float(mass @ _phi_cdf((s - c * math.sqrt(t[k])) / d))  # P(S_k >= c sqrt(t_k), continued so far)

        target = inc[k]
        if target <= 0:
            ck = math.inf
        else:
            a, b = -10.0, 40.0
            if exit_prob(a) < target:  # cannot spend that much: every path that is left exits
                ck = a
            else:
                for _ in range(80):
                    mid = 0.5 * (a + b)
                    if exit_prob(mid) > target:
                        a = mid
                    else:
                        b = mid
                ck = 0.5 * (a + b)
        out.append(ck)
        if k == len(t) - 1:
            break
        hi = ck * math.sqrt(t[k]) if math.isfinite(ck) else 8.0 * math.sqrt(t[k]) + 8.0
        s_new = np.linspace(lo, hi, grid)
        w_new = np.full(grid, (hi - lo) / (grid - 1))
        w_new[0] *= 0.5
        w_new[-1] *= 0.5
        kern = np.exp(-0.5 * ((s_new[:, None] - s[None, :]) / d) ** 2) / (d * math.sqrt(2 * math.pi))
        dens = kern @ mass
        s, w = s_new, w_new
    return tuple(float(x) for x in out)


def schedule(max_items: int, first: int = DEFAULT_FIRST, growth: float = DEFAULT_GROWTH) -> tuple[int, ...]:
    """Items at each look: first, first * growth, ... (rounded), then max_items; a last step shorter than a third of
    the previous look's size is merged into the final look."""
    max_items, first = int(max_items), int(first)
    if max_items < 1 or first < 1:
        raise CpbenchError(f"--max-items and the first look must be >= 1 (got {max_items}, {first})")
    if growth <= 1.0:
        raise CpbenchError(f"look growth must be > 1, got {growth}")
    looks: list[int] = []
    n = float(min(first, max_items))
    while round(n) < max_items:
        looks.append(int(round(n)))
        n *= growth
    if looks and max_items - looks[-1] < looks[-1] / 3 and len(looks) > 1:
        looks.pop()
    looks.append(max_items)
    return tuple(dict.fromkeys(looks))


@dataclass(frozen=True)
class Design:
    """The sequential plan: looks (items), alpha of the family, spending function, multiplicity."""

    looks: tuple[int, ...]
    alpha: float = 0.05
    spending: str = "pocock"
    multiplicity: str = "holm"  # holm | bonferroni | none
    # futility (beta-spending, non-binding): a check whose estimate shows a regression above "none" (0 for a set-size
    # increase or an accuracy drop) at one-sided level `futility`, spent over the looks with the same spending
    # function, stops its cell as failed ("futile"): it would likely not be shown within its limit by max items.
    # It only stops cells, never passes one, so the false-pass level is untouched; 0 turns it off.
    futility: float = 0.0

    def __post_init__(self) -> None:
        if not self.looks or any(b <= a for a, b in zip(self.looks, self.looks[1:])):
            raise CpbenchError(f"looks must be increasing item counts, got {self.looks}")
        if self.spending not in SPENDING:
            raise CpbenchError(f"unknown spending function {self.spending!r} (use {', '.join(SPENDING)})")
        if self.multiplicity not in ("holm", "bonferroni", "none"):
            raise CpbenchError(f"the sequential gate controls the family-wise error: holm, bonferroni or none, "
                               f"not {self.multiplicity!r}")  # fmt: skip
        if not 0.0 < self.alpha < 0.5:
            raise CpbenchError(f"alpha must be in (0, 0.5), got {self.alpha}")
        if not 0.0 <= self.futility < 0.5:
            raise CpbenchError(f"futility level must be in [0, 0.5), got {self.futility}")

    @classmethod
    def of(cls, max_items: int, alpha: float = 0.05, spending: str = "pocock", multiplicity: str = "holm",
           first: int = DEFAULT_FIRST, growth: float = DEFAULT_GROWTH, futility: float = 0.0) -> "Design":  # fmt: skip
        return cls(schedule(max_items, first, growth), alpha, spending, multiplicity, futility)

    @property
    def max_items(self) -> int:
        return self.looks[-1]

    @property
    def fractions(self) -> tuple[float, ...]:
        return tuple(n / self.max_items for n in self.looks)

    def critical(self, look: int, alpha_i: float) -> float:
        """z critical value of a hypothesis at level alpha_i at look index `look` (0-based)."""
        return boundaries(self.fractions, round(float(alpha_i), 15), self.spending)[look]

    def futility_bound(self, look: int) -> float:
        """z a check's evidence of a regression must reach at look index `look` to stop its cell (inf when off)."""
        if self.futility <= 0:
            return math.inf
        return boundaries(self.fractions, round(float(self.futility), 15), self.spending)[look]

    def look_of(self, n: int) -> int:
        if n not in self.looks:
            raise CpbenchError(f"{n} items is not a look of this design ({', '.join(map(str, self.looks))})")
        return self.looks.index(n)

    def describe(self) -> str:
        return (f"sequential: looks at {', '.join(f'{n:,}' for n in self.looks)} items, one-sided alpha "
                f"{self.alpha:g} over the family, {self.spending} alpha spending (Lan-DeMets), "
                f"{'group-sequential Holm' if self.multiplicity == 'holm' else self.multiplicity} over every "
                f"(cell, limit)" + (f"; futility stop at a regression shown at one-sided {self.futility:g}"
                                    if self.futility > 0 else ""))  # fmt: skip

    def to_dict(self) -> dict:
        return {"looks": list(self.looks), "alpha": self.alpha, "spending": self.spending,
                "multiplicity": self.multiplicity, "futility": self.futility}  # fmt: skip


@dataclass
class Hypothesis:
    """One (cell, check): its current alpha share and, once decided, when and how."""

    cell: Hashable
    check: str
    alpha: float
    status: str = "undecided"  # undecided | within | beyond | futile (a regression shown: stopped, counts as fail)
    look: int | None = None  # 0-based look index of the decision
    items: int | None = None
    z: float = math.nan  # the last z_within seen
    bound: float = math.nan  # the critical value it was compared with at its last look


@dataclass
class SequentialGate:
    """State of a sequential gate over a fixed family of (cell, check) hypotheses."""

    design: Design
    hyps: dict[tuple[Hashable, str], Hypothesis] = field(default_factory=dict)
    looks_done: int = 0

    @classmethod
    def start(cls, design: Design, family: list[tuple[Hashable, str]]) -> "SequentialGate":
        m = max(len(family), 1)
        a = design.alpha / m if design.multiplicity != "none" else design.alpha
        return cls(design, {k: Hypothesis(k[0], k[1], a) for k in family})

    # -------------------------------------------------------------------------------------------- cells
    def cell_status(self, cell: Hashable) -> str:
        """pass (every check within), fail (a check beyond), or continue."""
        hs = [h for h in self.hyps.values() if h.cell == cell]
        if any(h.status in ("beyond", "futile") for h in hs):
            return "fail"
        if hs and all(h.status == "within" for h in hs):
            return "pass"
        return "continue"

    def open_cells(self) -> list[Hashable]:
        return [c for c in dict.fromkeys(h.cell for h in self.hyps.values()) if self.cell_status(c) == "continue"]

    def decided_at(self, cell: Hashable) -> tuple[int | None, int | None]:
        """(looks, items) at which the cell was decided (None while open)."""
        st = self.cell_status(cell)
        hs = [h for h in self.hyps.values() if h.cell == cell and h.look is not None]
        if st == "continue" or not hs:
            return None, None
        if st == "fail":
            h = min((h for h in hs if h.status in ("beyond", "futile")), key=lambda h: h.look)
        else:
            h = max(hs, key=lambda h: h.look)
        return h.look + 1, h.items

    # -------------------------------------------------------------------------------------------- looks
    def look(self, n: int, z_within: Mapping[tuple[Hashable, str], float],
             z_regress: Mapping[tuple[Hashable, str], float] | None = None) -> list[tuple[Hashable, str]]:
        """Test at the look of `n` items with the z-statistics of the open cells (z_within > 0: evidence that the
        limit holds; z_regress > 0: evidence of a regression above none, for the design's futility stop). Returns the
        hypotheses decided at this look."""
        k = self.design.look_of(n)
        if k < self.looks_done - 1:
            raise CpbenchError(f"look {k + 1} after look {self.looks_done}: looks must come in order")
        self.looks_done = max(self.looks_done, k + 1)
        open_cells = set(self.open_cells())
        for key, z in z_within.items():
            h = self.hyps.get(key)
            if h is not None and h.status == "undecided" and h.cell in open_cells:
                h.z = float(z)
        decided: list[tuple[Hashable, str]] = []
        while True:
            newly = []
            for key, h in self.hyps.items():
                if h.status != "undecided" or h.cell not in open_cells or key not in z_within:
                    continue
                z = float(z_within[key])
                if not math.isfinite(z):
                    continue
                c = self.design.critical(k, h.alpha)
                h.bound = c
                if z >= c:
                    h.status = "within"
                elif z <= -c:
                    h.status = "beyond"
                else:
                    continue
                h.look, h.items = k, n
                newly.append(key)
            if not newly:
                break
            decided += newly
            if self.design.multiplicity == "holm":
                freed = sum(self.hyps[key].alpha for key in newly)
                rest = [h for h in self.hyps.values() if h.status == "undecided"]
                for h in rest:
                    h.alpha += freed / len(rest)
            open_cells = {c for c in open_cells if self.cell_status(c) == "continue"}
        if z_regress and self.design.futility > 0:
            b = self.design.futility_bound(k)
            for key, zr in z_regress.items():
                h = self.hyps.get(key)
                if h is None or h.status != "undecided" or h.cell not in open_cells or not math.isfinite(zr):
                    continue
                if zr >= b:  # non-binding: its alpha is not recycled (a futility stop rejects nothing)
                    h.status, h.look, h.items = "futile", k, n
                    decided.append(key)
        return decided

    def summary(self) -> dict:
        cells = list(dict.fromkeys(h.cell for h in self.hyps.values()))
        out = []
        for c in cells:
            looks, items = self.decided_at(c)
            st = self.cell_status(c)
            out.append({"cell": list(c) if isinstance(c, tuple) else c,
                        "status": "inconclusive" if st == "continue" else st, "looks": looks, "items": items,
                        "checks": [{"check": h.check, "status": h.status, "z": _r(h.z), "bound": _r(h.bound),
                                    "alpha": _r(h.alpha), "look": None if h.look is None else h.look + 1,
                                    "items": h.items}
                                   for h in self.hyps.values() if h.cell == c]})  # fmt: skip
        return {"design": self.design.to_dict(), "looks_done": self.looks_done, "cells": out}


def _r(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def z_within(p: float, below: bool, good_below: bool) -> float:
    """Signed z of a gate check (`cpbench.results.analysis.decisions.Directional`): its one-sided p-value for the side the
    data point to, positive when that side is the good one (the limit holds)."""
    if p is None or not math.isfinite(p):
        return math.nan
    p = min(max(float(p), 1e-300), 1.0 - 1e-16)
    z = -_N.inv_cdf(p)
    return z if below == good_below else -z


# -------------------------------------------------------------------------------------------- planning helpers
def fixed_n_items(se1: float, gap: float, alpha: float, power: float = 0.8) -> float:
    """Items a fixed-n one-sided test at level alpha needs for `power` when the per-item standard deviation of the
    estimate is se1 (se = se1 / sqrt(n)) and the truth is `gap` from the margin."""
    if gap == 0:
        return math.inf
    return ((_N.inv_cdf(1 - alpha) + _N.inv_cdf(power)) * se1 / abs(gap)) ** 2
