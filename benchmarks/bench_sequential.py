"""Sequential gate vs fixed-n gate: false passes at the limit and items to decision.

    OMP_NUM_THREADS=1 python benchmarks/bench_sequential.py [--reps 2000] [--gate-reps 0]

Part 1 (the canonical process: z-statistics of a Brownian motion in information time, which every gate estimate
follows to first order): pass rate at the limit, fixed-n and sequential, and the median items to a decision at a
true regression of 0 and of twice the limit vs the fixed-n design with 80 % power, for the default design.
Part 2 (--gate-reps > 0): the same with the gate's own item-level estimator (`cpbench.run.seqrun.look_statistics`:
records, paired bootstrap, one-sided tests) on a synthetic logits population, for each limit type (set size,
accuracy drop, coverage with APS, flip rate). Slow (about 0.3 s per look per cell on one core).
"""

from __future__ import annotations

import argparse
import math
import time
from statistics import NormalDist

import numpy as np

from cpbench.results.analysis.sequential import Design, SequentialGate

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20000)
    ap.add_argument("--alpha", type=float, default=0.05)
    args = ap.parse_args()
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
