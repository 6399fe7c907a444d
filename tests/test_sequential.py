"""The sequential gate's statistics (cpbench.results.analysis.sequential): exact boundaries, and a simulation that can fail:
false passes at the limit stay within nominal + Monte Carlo error, fixed-n and sequential, on a synthetic
population with the gate's own estimator (item-level paired estimates of accuracy drop)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cpbench.results.analysis.sequential import Design, SequentialGate, boundaries, schedule, spent, z_within


def test_boundaries_match_published_values():
    # gsDesign, one-sided 0.025, 5 equally spaced looks: sfLDOF and sfLDPocock
    assert np.allclose(boundaries((.2, .4, .6, .8, 1.0), 0.025, "obf"), [4.8769, 3.3569, 2.6803, 2.2898, 2.0310],
                       atol=2e-3)
    assert np.allclose(boundaries((.2, .4, .6, .8, 1.0), 0.025, "pocock"), [2.4380, 2.4268, 2.4101, 2.3966, 2.3859],
                       atol=2e-3)
    assert boundaries((1.0,), 0.05, "pocock")[0] == pytest.approx(1.6449, abs=1e-3)
    assert spent(1.0, 0.05, "obf") == pytest.approx(0.05) and spent(0.0, 0.05, "pocock") == 0.0


def test_schedule_and_design():
    assert schedule(1000, 200) == (200, 300, 450, 675, 1000)
    assert schedule(27, 20) == (20, 27)
    d = Design.of(1000)
    assert d.fractions[-1] == 1.0 and d.critical(4, 0.05) > 1.6449


def _brownian_false_pass(design: Design, sims: int, rng) -> float:
    t = np.array(design.fractions)
    dt = np.diff(np.concatenate([[0.0], t]))
    z = np.cumsum(rng.standard_normal((sims, len(t))) * np.sqrt(dt), axis=1) / np.sqrt(t)
    c = np.array([design.critical(k, design.alpha) for k in range(len(t))])
    return float((z >= c).any(axis=1).mean())


def test_level_of_many_looks_on_the_canonical_process():
    rng = np.random.default_rng(3)
    d = Design.of(5000, alpha=0.05, first=100)
    rate = _brownian_false_pass(d, 40000, rng)
    assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 40000)
    assert rate >= 0.05 - 3 * math.sqrt(0.05 * 0.95 / 40000)  # exact, not merely conservative


def test_holm_recycles_alpha_and_cells_stop():
    d = Design.of(1000, alpha=0.05, first=200)
    g = SequentialGate.start(d, [(("a",), "x"), (("b",), "x")])
    decided = g.look(200, {(("a",), "x"): 10.0, (("b",), "x"): 0.5})
    assert decided == [(("a",), "x")] and g.cell_status(("a",)) == "pass"
    assert g.hyps[(("b",), "x")].alpha == pytest.approx(0.05)  # alpha / 2 + the freed alpha / 2
    assert g.open_cells() == [("b",)]
    g.look(300, {(("b",), "x"): -9.0})
    assert g.cell_status(("b",)) == "fail" and g.decided_at(("b",)) == (2, 300)
    assert z_within(0.025, below=True, good_below=True) == pytest.approx(1.96, abs=1e-3)
    assert z_within(0.025, below=False, good_below=True) == pytest.approx(-1.96, abs=1e-3)


def _acc_drop_z(correct_b: np.ndarray, correct_c: np.ndarray, margin: float) -> float:
    """The gate's accuracy-drop test on these items (cpbench.results.analysis.paired's Agresti-Min floored paired se)."""
    n = len(correct_b)
    d = correct_b.astype(float) - correct_c
    b, c = float(((correct_b == 1) & (correct_c == 0)).sum()), float(((correct_b == 0) & (correct_c == 1)).sum())
    p10, p01 = (b + .5) / (n + 2), (c + .5) / (n + 2)
    se = max(d.std(ddof=1) / math.sqrt(n), math.sqrt(max(p10 + p01 - (p10 - p01) ** 2, 0) / (n + 2)))
    return (margin - d.mean()) / se  # > 0: the drop is below the limit


def test_false_pass_rate_at_the_limit_fixed_and_sequential():
    """A population whose true accuracy drop equals the limit: passes <= alpha + 3 MC se, for one look and for the
    sequential design (5 looks). Fails if the boundaries ignored the repeated looks (naive re-testing at 1.645
    passes ~12 % here)."""
    rng = np.random.default_rng(11)
    limit, reps, alpha = 0.03, 1500, 0.05
    d = Design.of(2000, alpha=alpha, first=300)
    fixed = seq = naive = 0
    for _ in range(reps):
        u = rng.random(2000)
        cb = (u < 0.70).astype(int)  # base right 70 %, flips right->wrong 8 %, wrong->right 5 %: drop 0.03
        cc = cb.copy()
        cc[(u < 0.08)] = 0
        cc[(u >= 0.70) & (u < 0.75)] = 1
        zs = {n: _acc_drop_z(cb[:n], cc[:n], limit) for n in d.looks}
        fixed += zs[d.max_items] >= 1.6449
        g = SequentialGate.start(d, [("c", "acc")])
        for n in d.looks:
            g.look(n, {("c", "acc"): zs[n]})
            if g.cell_status("c") != "continue":
                break
        seq += g.cell_status("c") == "pass"
        naive += any(zs[n] >= 1.6449 for n in d.looks)
    tol = 3 * math.sqrt(alpha * (1 - alpha) / reps)
    assert fixed / reps <= alpha + tol
    assert seq / reps <= alpha + tol
    assert naive / reps > alpha + tol  # the test can fail: re-testing without spending does inflate the error


def test_futility_stops_regressions_early_and_never_passes_anything() -> None:
    """The beta-spending futility stop (Design.futility): on the canonical process it fails a candidate twice the limit
    out in a median of about a third of N80 items (0.76 without it), costs a few points of power at no regression, and
    leaves the false-pass rate at the limit nominal (it only ever stops cells). Also: a futile check fails its cell and
    the summary says so."""
    za_zb = 1.6448536 + 0.8416212
    n80 = 2000
    rng = np.random.default_rng(7)
    out = {}
    for fut in (0.0, 0.05):
        d = Design.of(int(1.5 * n80), first=200, futility=fut, multiplicity="none")
        t = np.array(d.looks, dtype=float)
        dt = np.diff(np.concatenate([[0.0], t]))
        for name, mu, reps in (("limit", 0.0, 1500), ("t0", za_zb / math.sqrt(n80), 400),
                               ("t2", -za_zb / math.sqrt(n80), 400)):
            passed, items = 0, []
            for _ in range(reps):
                z = np.cumsum(mu * dt + rng.standard_normal(len(t)) * np.sqrt(dt)) / np.sqrt(t)
                g = SequentialGate.start(d, [("c", "x")])
                for n, zk in zip(d.looks, z):
                    zreg = za_zb * math.sqrt(n / n80) - zk  # evidence of a regression above none (L / se - z)
                    g.look(n, {("c", "x"): float(zk)}, {("c", "x"): float(zreg)})
                    if g.cell_status("c") != "continue":
                        break
                st = g.cell_status("c")
                passed += st == "pass"
                items.append(g.decided_at("c")[1] or math.inf)
            out[(fut, name)] = (passed / reps, float(np.median(items)) / n80)
    assert out[(0.05, "limit")][0] <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 1500)
    assert out[(0.05, "limit")][0] <= out[(0.0, "limit")][0]
    assert out[(0.05, "t2")][1] <= 0.45 < out[(0.0, "t2")][1]
    assert out[(0.05, "t0")][0] >= out[(0.0, "t0")][0] - 0.06 and out[(0.05, "t0")][0] >= 0.8
    g = SequentialGate.start(Design.of(3000, futility=0.05), [("c", "set size"), ("c", "coverage")])
    g.look(200, {("c", "set size"): 0.0, ("c", "coverage"): 0.0}, {("c", "set size"): 9.0})
    assert g.cell_status("c") == "fail" and g.summary()["cells"][0]["checks"][0]["status"] == "futile"
