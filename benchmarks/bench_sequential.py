"""Sequential gate vs fixed-n gate: false passes at the limit and items to decision.

    OMP_NUM_THREADS=1 python benchmarks/bench_sequential.py [--reps 2000] [--gate-reps 0]

Part 1 (the canonical process: z-statistics of a Brownian motion in information time, which every gate estimate
follows to first order): pass rate at the limit, fixed-n and sequential, and the median items to a decision at a
true regression of 0 and of twice the limit vs the fixed-n design with 80 % power, for the default design.
Part 2 (--gate-reps > 0): the same with the gate's own item-level estimator (`cpbench.run.seqrun.look_statistics`:
records, paired bootstrap, one-sided tests) on a synthetic logits population, for each limit type (set size,
accuracy drop, coverage with APS, flip rate). Slow (about 0.3 s per look per cell on one core).

    --grid                      the design grid (spending, growth, max items, first look) on the canonical process
    --real BASE,CAND [--futility 0.05]   items to decision with the gate's own estimator on a real pair (one LAC
                                set-size check; truths 0, 2x the limit and at the limit), docs/ci-gate.md
"""

from __future__ import annotations

import argparse
import math
import time
from statistics import NormalDist

import numpy as np

from cpbench.results.analysis.sequential import Design, SequentialGate, schedule

N = NormalDist()


def canonical(reps: int, alpha: float, first_frac: float, nmax_over_n80: float, rng) -> dict:
    za, zb = N.inv_cdf(1 - alpha), N.inv_cdf(0.8)
    n80 = 10_000
    d = Design.of(int(nmax_over_n80 * n80), alpha=alpha, first=int(first_frac * n80))
    t = np.array(d.looks, dtype=float)
    dt = np.diff(np.concatenate([[0.0], t]))
    c = np.array([d.critical(k, alpha) for k in range(len(t))])
    out = {"looks": d.looks, "n80": n80}
    for name, drift in (("at limit", 0.0), ("regression 0", +(za + zb) / math.sqrt(n80)),
                        ("regression 2x limit", -(za + zb) / math.sqrt(n80))):
        s = np.cumsum(drift * dt + rng.standard_normal((reps, len(t))) * np.sqrt(dt), axis=1)
        z = s / np.sqrt(t)
        hit = np.abs(z) >= c
        k = np.where(hit.any(1), hit.argmax(1), len(t))
        zk = z[np.arange(reps), np.minimum(k, len(t) - 1)]
        passed = (k < len(t)) & (zk > 0)
        items = np.where(k < len(t), t[np.minimum(k, len(t) - 1)], np.inf)
        fixed_pass = float((s[:, -1] / math.sqrt(t[-1]) >= za).mean()) if name == "at limit" else math.nan
        out[name] = {"seq_pass": float(passed.mean()), "fixed_pass_at_nmax": fixed_pass,
                     "median_items": float(np.median(items)), "decided": float((k < len(t)).mean())}
    return out


def design_grid(reps: int, alpha: float, rng) -> None:
    """Median items to a pass at a truth one limit below the margin (/ N80), canonical process, over spending
    function, look growth, max items and first look: the best designs first."""
    za, zb = N.inv_cdf(1 - alpha), N.inv_cdf(0.8)
    n80 = 2000
    res = []
    for sp in ("pocock", "linear"):
        for g in (1.25, 1.5, 2.0):
            for mx in (1.25, 1.5, 2.0, 3.0):
                for first in (0.05, 0.1, 0.2):
                    d = Design(schedule(int(mx * n80), int(first * n80), g), alpha, sp)
                    t = np.array(d.looks, dtype=float)
                    dt = np.diff(np.concatenate([[0.0], t]))
                    c = np.array([d.critical(k, alpha) for k in range(len(t))])
                    row = {}
                    for name, mu in (("limit", 0.0), ("t0", (za + zb) / math.sqrt(n80))):
                        s = np.cumsum(mu * dt + rng.standard_normal((reps, len(t))) * np.sqrt(dt), axis=1)
                        z = s / np.sqrt(t)
                        hit = (z >= c) | (z <= -c)
                        k = np.where(hit.any(1), hit.argmax(1), len(t))
                        kk = np.minimum(k, len(t) - 1)
                        passed = (k < len(t)) & (z[np.arange(reps), kk] > 0)
                        row[name] = (passed.mean(), np.median(np.where(k < len(t), t[kk], np.inf)) / n80)
                    res.append((row["t0"][1], sp, g, mx, first, row["limit"][0], row["t0"][0]))
    res.sort()
    print("| median items / N80 (truth 0) | spending | growth | max / N80 | first / N80 | pass at limit | power |")
    print("|---|---|---|---|---|---|---|")
    for r in res[:12]:
        print("| %.2f | %s | %.2f | %.2f | %.2f | %.4f | %.3f |" % r)


def real_items_to_decision(base_path: str, cand_path: str, score: str, reps: int, n80: int, nmax_over_n80: float,
                           alpha: float, rng, first: int = 200, futility: float = 0.0) -> dict:
    """The sequential gate with the gate's own item-level estimator on a real population (the empirical distribution
    of a real pair's N items; samples are i.i.d. draws with replacement): one cell, one `--max-set-size-increase`
    check on `score`. The per-item sd of the estimate (se * sqrt(n), mean over 20 samples of 1,000) fixes the
    distance L that a fixed-n one-sided test at level alpha decides with 80 % power at n80 items; the limit is then
    set at the population value + L ("true regression 0": the truth one limit below its margin), - L ("twice the
    limit": one limit beyond) and at the value itself (a pass there is a false pass). Each replicate draws one random
    order of max items and runs the looks of `Design.of(max, first=...)` (records of both prefixes, the gate's
    paired bootstrap, Directional test, SequentialGate) until decided."""
    import sys

    from cpbench.results.analysis import simulate as S
    from cpbench.results.analysis.compare import RecordNumbers, compare_numbers
    from cpbench.results.analysis.decisions import Directional
    from cpbench.results.analysis.sequential import z_within
    from cpbench.results.conformal.protocols import analyze_artifact, preset
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from bench_paired import load_pair

    name, lab, xb, xc, letters = load_pair(base_path, cand_path)
    key = preset("default", splits=100)
    truth = S.population_values(lab, xb, xc, n80, scores=(score,), letters=letters)[f"d_{score}.set_size"]

    def estimate(a, b):
        ra, rb = analyze_artifact(a, key, (score,)), analyze_artifact(b, key, (score,))
        return compare_numbers(a, b, RecordNumbers.from_record(ra), RecordNumbers.from_record(rb), (score,),
                               set_pairs=False)[f"d_{score}.set_size"]

    sd1 = float(np.mean([estimate(*S.sample_pair(lab, xb, xc, 1000, rng, letters)).se * math.sqrt(1000)
                         for _ in range(20)]))
    za, zb = N.inv_cdf(1 - alpha), N.inv_cdf(0.8)
    L = (za + zb) * sd1 / math.sqrt(n80)
    design = Design.of(int(nmax_over_n80 * n80), alpha=alpha, first=first, multiplicity="none", futility=futility)
    out = {"pair": name, "score": score, "truth": truth, "L": L, "sd1": sd1, "looks": design.looks, "n80": n80}
    for label, margin in (("truth 0", truth + L), ("truth 2x limit", truth - L), ("at the limit", truth)):
        items, passed = [], 0
        for _ in range(reps):
            idx = rng.integers(0, len(lab), design.max_items)
            gate = SequentialGate.start(design, [("c", "set size")])
            for n in design.looks:
                ids = [f"i{j:06d}" for j in range(n)]
                a = S.artifact(ids, lab[idx[:n]], xb[idx[:n]], "base", letters)
                b = S.artifact(ids, lab[idx[:n]], xc[idx[:n]], "cand", letters)
                e = estimate(a, b)
                t = Directional.test(e, margin)
                t0 = Directional.test(e, margin - L)  # "no regression": one limit below the margin (the gate's 0)
                gate.look(n, {("c", "set size"): z_within(t.p, t.below, True)},
                          {("c", "set size"): -z_within(t0.p, t0.below, True)})
                st = gate.cell_status("c")
                if st != "continue":
                    items.append(n)
                    passed += st == "pass"
                    break
            else:
                items.append(math.inf)
        out[label] = {"median_items": float(np.median(items)), "pass": passed / reps,
                      "decided": float(np.mean(np.isfinite(items))), "reps": reps}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20000)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--real", action="append", default=[], metavar="BASE,CAND",
                    help="also simulate the gate's own estimator on this real pair (repeatable)")
    ap.add_argument("--real-reps", type=int, default=100)
    ap.add_argument("--real-n80", type=int, default=1500, help="items a fixed-n design needs for 80 %% power")
    ap.add_argument("--real-max", type=float, default=1.5, help="max items / N80 of the sequential design")
    ap.add_argument("--score", default="lac")
    ap.add_argument("--futility", type=float, default=0.0, help="the design's futility level (run default 0.05)")
    ap.add_argument("--grid", action="store_true", help="design grid on the canonical process (spending, growth, "
                    "max items, first look)")
    args = ap.parse_args()
    if args.grid:
        t0 = time.perf_counter()
        design_grid(args.reps, args.alpha, np.random.default_rng(0))
        print(f"wall {time.perf_counter() - t0:.0f} s")
        return
    if args.real:
        import os

        print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print("| real pair | score | per-item sd | L (80 % power at N80) | looks | median items / N80, truth 0 | "
              "median items / N80, truth 2x limit | pass at the limit | decided (truth 0 / 2x) | passed at truth 0 |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        rng = np.random.default_rng(3)
        for spec in args.real:
            t0 = time.perf_counter()
            r = real_items_to_decision(*spec.split(","), args.score, args.real_reps, args.real_n80, args.real_max,
                                       args.alpha, rng, futility=args.futility)
            n80 = r["n80"]
            mc = math.sqrt(0.05 * 0.95 / args.real_reps)
            print(f"| {r['pair']} | {r['score']} | {r['sd1']:.3f} | {r['L']:.4f} (N80 = {n80:,}) | "
                  f"{', '.join(map(str, r['looks']))} | {r['truth 0']['median_items'] / n80:.2f} | "
                  f"{r['truth 2x limit']['median_items'] / n80:.2f} | {100 * r['at the limit']['pass']:.1f} % "
                  f"(MC se {100 * mc:.1f}) | {100 * r['truth 0']['decided']:.0f} / "
                  f"{100 * r['truth 2x limit']['decided']:.0f} % | {100 * r['truth 0']['pass']:.0f} % | "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        return
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    mc = 3 * math.sqrt(args.alpha * (1 - args.alpha) / args.reps)
    print(f"canonical process, {args.reps} replicates, one-sided alpha {args.alpha} (3 MC se = {mc:.4f})")
    print("| max items / N80 | first look / N80 | looks | pass at limit (seq) | pass at limit (fixed n=max) "
          "| median items / N80, truth 0 | median items / N80, truth 2x limit |")
    print("|---|---|---|---|---|---|---|")
    for nmax in (1.0, 1.5, 2.0, 4.0):
        for first in (0.1, 0.25):
            r = canonical(args.reps, args.alpha, first, nmax, rng)
            n80 = r["n80"]
            print(f"| {nmax:g} | {first:g} | {len(r['looks'])} | {r['at limit']['seq_pass']:.4f} | "
                  f"{r['at limit']['fixed_pass_at_nmax']:.4f} | {r['regression 0']['median_items'] / n80:.2f} | "
                  f"{r['regression 2x limit']['median_items'] / n80:.2f} |")
    print(f"wall {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
