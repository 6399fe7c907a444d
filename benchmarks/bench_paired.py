"""Calibration, gate operating characteristics, items needed and cost of cpbench's item-level paired intervals.

Population model (cpbench.analysis.simulate): N = 200,000 items with six options (gold A-D with probability 0.22
each, E/F 0.06 each); baseline option logits N(0, 1), E and F lowered by 0.5, the gold option raised by an item
easiness ~ N(2.0, 1.5) (accuracy 0.68, LAC sets of about 2.6 options at alpha = 0.1). A compressed model is the same
logits plus Gaussian noise of scale sigma (one fixed draw), its gold logit lowered by signal_loss * (0.5 + Exp(1)),
divided by a temperature. Item samples of size n are drawn with replacement (i.i.d. from the population) and analysed
as `cpbench run` does (default protocol: textbook quantile, alpha 0.1, cal_ratio 0.5, S random splits, LAC); the
population value of each quantity is its plug-in value on all N items at the quantile level the sample's analysis
targets, tau_n = ceil((n_cal + 1)(1 - alpha)) / (n_cal + 1).

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_paired.py [--quick]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # a script may set its own process's threads (library code never does)

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from cpbench.analysis import simulate as S  # noqa: E402
from cpbench.analysis.compare import RecordNumbers, compare_numbers  # noqa: E402
from cpbench.analysis.paired import z_of  # noqa: E402
from cpbench.conformal.protocols import analyze_artifact, preset  # noqa: E402

METRICS = ("d_acc", "d_lac.coverage", "d_lac.set_size", "d_lac.uacc", "flip_cw", "agreement", "lac.churn")


def coverage_table(lab, base, cand, sizes, draws, splits, n_boot) -> None:
    print(f"\n## Coverage of 95 % intervals (population value inside), S = {splits} splits, B = {n_boot}\n")
    print("| n | draws | " + " | ".join(METRICS) + " | split-only Δacc | split-only ΔSS | seconds |")
    print("|---" * (len(METRICS) + 5) + "|")
    for n in sizes:
        t = time.perf_counter()
        run = S.coverage_run(lab, base, cand, n, draws[n], splits=splits, n_boot=n_boot, metrics=METRICS)
        cells = [f"{100 * run.covered[m]:.1f}" for m in METRICS]
        print(f"| {n:,} | {draws[n]} | " + " | ".join(cells) + f" | {100 * run.split_covered['d_acc']:.1f} | "
              f"{100 * run.split_covered['d_lac.set_size']:.1f} | {time.perf_counter() - t:.0f} |", flush=True)
    print("\nPopulation values (n = 1,000): " + ", ".join(
        f"{m} {v:+.4f}" for m, v in S.population_values(lab, base, cand, 1000).items() if m in METRICS))
    mc = math.sqrt(0.95 * 0.05 / max(draws.values()))
    print(f"Monte Carlo standard error of a coverage figure: {100 * mc:.1f} points at {max(draws.values())} draws, "
          f"{100 * math.sqrt(0.95 * 0.05 / min(draws.values())):.1f} at {min(draws.values())}.")


def gate_table(lab, base, n, draws, limit, splits, n_boot, iters) -> dict[str, S.GateRun]:
    print(f"\n## Gate operating characteristics: n = {n:,}, --max-set-size-increase {limit}, one cell, "
          f"{draws} item samples each\n")
    makers = {
        "no regression (ΔSS = 0)": (lambda c: S.perturb(base, 0.2, 1 / c), 0.0, 1.0, 1.6),
        "at the limit (ΔSS = 0.25)": (lambda x: S.perturb(base, 0.2, signal_loss=x, labels=lab), limit, 0.0, 1.0),
        "twice the limit (ΔSS = 0.5)": (lambda x: S.perturb(base, 0.2, signal_loss=x, labels=lab), 2 * limit, 0.0,
                                        1.0),
    }
    print("| candidate (sigma 0.2 noise + ...) | population ΔSS | pass | fail | inconclusive | mean se(ΔSS) |")
    print("|---|---|---|---|---|---|")
    runs = {}
    for name, (make, target, lo, hi) in makers.items():
        cand, knob = S.tuned(lab, base, make, target, n, lo, hi, iters=iters)
        run = S.gate_run(lab, base, cand, n, draws, limit, splits=splits, n_boot=n_boot)
        runs[name] = run
        print(f"| {name} (knob {knob:.3f}) | {run.truth:+.3f} | {100 * run.passed:.1f} % | {100 * run.failed:.1f} % | "
              f"{100 * run.inconclusive:.1f} % | {run.se_mean:.4f} |", flush=True)
    return runs


def items_needed(lab, base, n_ref=1000, draws=40, splits=20, n_boot=300) -> None:
    """Items for an 80 % chance that a candidate with no regression passes (one cell, one-sided 95 % bound):
    n = n_ref * ((z_0.95 + z_0.80) * se_ref / limit)^2, se_ref the mean item-level se at n_ref."""
    cand, _ = S.tuned(lab, base, lambda c: S.perturb(base, 0.2, 1 / c), 0.0, n_ref, 1.0, 1.6, iters=10)
    truth = S.population_values(lab, base, cand, n_ref)
    rng = np.random.default_rng(5)
    key = preset("default", splits=splits)
    ses: dict[str, list[float]] = {"d_lac.set_size": [], "d_acc": []}
    for _ in range(draws):
        a, b = S.sample_pair(lab, base, cand, n_ref, rng)
        est = compare_numbers(a, b, RecordNumbers.from_record(analyze_artifact(a, key, ("lac",))),
                              RecordNumbers.from_record(analyze_artifact(b, key, ("lac",))), ("lac",), n_boot=n_boot)
        for k in ses:
            ses[k].append(est[k].se)
    z = z_of(0.95) + z_of(0.80)
    print(f"\n## Items needed for an 80 % chance to pass when there is no regression (one cell, one-sided 95 %)\n")
    print(f"Candidate: sigma 0.2 noise, sharpened to population ΔSS {truth['d_lac.set_size']:+.3f}, Δacc "
          f"{truth['d_acc']:+.4f}, flip rate {truth['flip_cw']:.4f}; se measured at n = {n_ref:,} "
          f"(mean over {draws} samples), scaled as 1/sqrt(n).\n")
    print("| limit | value | items |")
    print("|---|---|---|")
    se_ss, se_acc = statistics.mean(ses["d_lac.set_size"]), statistics.mean(ses["d_acc"])
    for lim in (0.1, 0.25, 0.5):
        print(f"| --max-set-size-increase | {lim} | {math.ceil(n_ref * (z * se_ss / lim) ** 2):,} |")
    for lim in (0.01, 0.02, 0.05):
        gap = lim + truth["d_acc"]
        print(f"| --max-accuracy-drop | {lim} | {math.ceil(n_ref * (z * se_acc / gap) ** 2):,} |")
    f0 = truth["flip_cw"]
    for lim in (0.05, 0.1):
        if lim > f0:
            n_f = ((z_of(0.95) * math.sqrt(lim * (1 - lim)) + z_of(0.8) * math.sqrt(f0 * (1 - f0))) / (lim - f0)) ** 2
            print(f"| --max-flip-rate (true {f0:.3f}) | {lim} | {math.ceil(n_f):,} |")


def cost(lab, base, cand, n=10_000, repeats=5, splits=100) -> None:
    print(f"\n## Cost of one cell pair, n = {n:,} items, B = 300 replicates, one core\n")
    rng = np.random.default_rng(9)
    a, b = S.sample_pair(lab, base, cand, n, rng)
    key = preset("default", splits=splits)
    ra, rb = analyze_artifact(a, key, ("lac", "aps")), analyze_artifact(b, key, ("lac", "aps"))
    na, nb = RecordNumbers.from_record(ra), RecordNumbers.from_record(rb)
    from cpbench.analysis import paired as P

    def timed(scores, cold) -> tuple[float, float]:
        cpu, wall = [], []
        for _ in range(repeats):
            P._DRAWS.clear()  # the comparison itself is always recomputed
            if cold:
                P._VIEWS.clear()
                P.boot_counts.cache_clear()
            t, c = time.perf_counter(), time.process_time()
            compare_numbers(a, b, na, nb, scores)
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        return statistics.median(cpu), statistics.median(wall)

    print("CPU seconds are this process's own time (what one free core would take); wall seconds depend on the "
          "machine's load.\n")
    print("| scores | caches | median CPU s | median wall s |")
    print("|---|---|---|---|")
    for scores in (("lac",), ("lac", "aps")):
        for cold in (True, False):
            cpu, wall = timed(scores, cold)
            print(f"| {'+'.join(scores)} | {'cold (views and bootstrap counts built)' if cold else 'warm (cached views and counts)'} | {cpu:.3f} | "
                  f"{wall:.3f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer draws (a smoke run, not the documented figures)")
    args = ap.parse_args()
    q = args.quick
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load average at start "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    t0 = time.perf_counter()
    lab, base = S.population(200_000)
    cand = S.perturb(base, 0.3, signal_loss=0.1, labels=lab)
    print("\nCoverage candidate: sigma 0.3 noise, signal loss 0.1, temperature 1.")
    sizes = (100, 300, 1000, 10_000)
    draws = {100: 60, 300: 60, 1000: 40, 10_000: 10} if q else {100: 1000, 300: 1000, 1000: 600, 10_000: 200}
    coverage_table(lab, base, cand, sizes, draws, splits=100, n_boot=300)
    gate_table(lab, base, 1000, 40 if q else 400, 0.25, splits=100, n_boot=300, iters=8 if q else 14)
    items_needed(lab, base, draws=10 if q else 40, splits=100)
    cost(lab, base, cand, repeats=2 if q else 5)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s wall, {time.process_time():.0f} s CPU; load average at end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
