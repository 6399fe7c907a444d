"""Measure the threshold detector's false-alarm and detection rates on synthetic sweeps (docs/leaderboards.md).

Run: OMP_NUM_THREADS=1 python docs/examples/threshold_rates.py [REPS]
Sweeps: bits 16/8/6/4/3/2 (the base anchor plus the registry's GPTQ sweep) and sparsity 0-90 % in steps of 10.
Linear: set size rises steadily with compression. Hinge: flat-ish, then steep past the breakpoint.
Noise: Gaussian on each level's mean set size (sd 0.05 options; a 100-split mean on ~5k test items varies less).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from cpbench.results.analysis.thresholds import fit_threshold

BITS = np.array([16.0, 8.0, 6.0, 4.0, 3.0, 2.0])
SPARSITY = np.arange(0.0, 100.0, 10.0)
SD = 0.05


def hinge(t: np.ndarray, c: float, s1: float, s2: float) -> np.ndarray:
    return 1.5 + s1 * (t - t.min()) + (s2 - s1) * np.maximum(0.0, t - c)


CASES = {
    "bits, linear (0.1 per bit)": (BITS, "bits", lambda: 1.5 + 0.1 * (16 - BITS), None),
    "bits, break at 4 (0.02 -> 0.3 per bit)": (BITS, "bits", lambda: hinge(-BITS, -4, 0.02, 0.3), 4.0),
    "bits, break at 4, weak (0.02 -> 0.1 per bit)": (BITS, "bits", lambda: hinge(-BITS, -4, 0.02, 0.1), 4.0),
    "sparsity, linear (0.02 per point)": (SPARSITY, "sparsity", lambda: 1.5 + 0.02 * SPARSITY, None),
    "sparsity, break at 50 (0.002 -> 0.05 per point)": (SPARSITY, "sparsity",
                                                        lambda: hinge(SPARSITY, 50, 0.002, 0.05), 50.0),
    "sparsity, break at 50, weak (0.002 -> 0.01 per point)": (SPARSITY, "sparsity",
                                                              lambda: hinge(SPARSITY, 50, 0.002, 0.01), 50.0),
}


def main(reps: int) -> None:
    rng = np.random.default_rng(0)
    print(f"{reps} noisy sweeps per case, noise sd {SD} options; share reported as 'threshold' "
          "(within one grid step of the true break, for hinges)")
    for name, (x, kind, curve, true) in CASES.items():
        step = 1.0 if kind == "bits" else 10.0
        for criterion in ("permutation", "bic"):
            t0, hits, near = time.perf_counter(), 0, 0
            for i in range(reps):
                fit = fit_threshold(x, curve() + rng.normal(0, SD, x.size), kind, criterion=criterion, seed=i)
                hits += fit.verdict == "threshold"
                if true is not None and fit.verdict == "threshold":
                    near += abs(fit.threshold - true) <= (2.0 if kind == "bits" and fit.threshold > true else step)
            per = (time.perf_counter() - t0) / reps * 1000
            extra = f", within one step {near / reps:.1%}" if true is not None else ""
            print(f"{name:55s} {criterion:12s} threshold {hits / reps:6.1%}{extra}  ({per:.1f} ms/fit)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
