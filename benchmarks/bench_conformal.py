"""Benchmark of the split-conformal engine (not a test).

    OMP_NUM_THREADS=1 python benchmarks/bench_conformal.py [--n 10000] [--k 6] [--splits 1000] [--mapie-splits N]

Prints, for n items x K options x R splits x {LAC, APS}:
  - the engine (split generation, then LAC and APS on all splits),
  - a naive numpy loop (one split at a time: partition for the quantile, dense sets),
  - MAPIE 1.6 looped over the same splits (SplitConformalClassifier, prefit, stored probabilities), with a check
    that its LAC coverage and set sizes equal ours split by split (same textbook quantile, empty sets allowed);
    MAPIE's APS randomises calibration scores, so its APS numbers are shown but not compared,
  - the whole `cpbench analyze` command on the same data saved as an artifact (a fresh process, imports included).
Thread count, numpy version and CPU are printed with the figures; record them with any number you quote.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cpbench.results.artifact import LogitsArtifact
from cpbench.results.conformal import build, evaluate, random_splits, softmax
from cpbench.results.conformal.quantile import order_statistic


def synthetic(n: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(n, k)) * 2).astype(np.float32)
    p = softmax(logits)
    y = np.minimum((rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1), k - 1)
    return logits, p, y


def clocks() -> tuple[float, float]:
    """(wall, CPU) seconds: on a shared machine CPU time is the work done, wall time what a user waits."""
    return time.perf_counter(), time.process_time()


def engine(p, y, R, seed=0):
    t0 = clocks()
    is_cal = random_splits(len(y), R, seed)
    t1 = clocks()
    lac = evaluate(build("lac", p), y, is_cal, 0.1)
    t2 = clocks()
    aps = evaluate(build("aps", p), y, is_cal, 0.1)
    t3 = clocks()
    wall = (t1[0] - t0[0], t2[0] - t1[0], t3[0] - t2[0], t3[0] - t0[0])
    cpu = (t1[1] - t0[1], t2[1] - t1[1], t3[1] - t2[1], t3[1] - t0[1])
    return is_cal, lac, aps, wall, cpu


def naive_loop(p, y, is_cal):
    lac_table, aps_table = build("lac", p), build("aps", p)
    out = []
    for row in is_cal:
        cal, test = np.flatnonzero(row), np.flatnonzero(~row)
        k = order_statistic(len(cal), 0.1)
        for t in (lac_table, aps_table):
            q = np.partition(t.cal_scores(y)[cal], k - 1)[k - 1]
            sets = t.stat[test] <= q
            out.append((sets[np.arange(len(test)), y[test]].mean(), sets.sum(axis=1).mean()))
    return out


def mapie_loop(p, y, is_cal):
    from mapie.classification import SplitConformalClassifier
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Stored(ClassifierMixin, BaseEstimator):
        def __init__(self, probs=None):
            self.probs = probs

        def fit(self, X=None, y=None):
            self.classes_ = np.arange(self.probs.shape[1])
            return self

        def predict_proba(self, X):
            return self.probs[np.asarray(X)[:, 0].astype(int)]

        def predict(self, X):
            return self.predict_proba(X).argmax(axis=1)

    est = Stored(p).fit()
    X = np.arange(len(y))[:, None]
    res = {"lac": [], "aps": []}
    for r, row in enumerate(is_cal):
        cal, test = np.flatnonzero(row), np.flatnonzero(~row)
        for score in ("lac", "aps"):
            m = SplitConformalClassifier(estimator=est, confidence_level=0.9, conformity_score=score, prefit=True,
                                         random_state=r).conformalize(X[cal], y[cal])
            sets = m.predict_set(X[test])[1][:, :, 0]
            res[score].append((sets[np.arange(len(test)), y[test]].mean(), sets.sum(axis=1).mean()))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--splits", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5, help="engine repetitions (min and median reported)")
    ap.add_argument("--mapie-splits", type=int, default=None, help="MAPIE loop over the first N splits (default all)")
    ap.add_argument("--skip-mapie", action="store_true")
    args = ap.parse_args()
    n, k, R = args.n, args.k, args.splits
    print(f"cpbench conformal benchmark: n={n} items, K={k} options, R={R} splits, alpha=0.1, scores LAC + APS")
    print(f"python {platform.python_version()}, numpy {np.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    logits, p, y = synthetic(n, k)

    runs = [engine(p, y, R) for _ in range(args.repeat)]
    is_cal, lac, aps, _, _ = runs[0]
    times = np.array([r[3] for r in runs])
    cpus = np.array([r[4] for r in runs])
    for j, label in enumerate(["split generation", "LAC (all splits)", "APS (all splits)", "total"]):
        print(f"  engine {label:17s} wall min {times[:, j].min():6.3f} s median {statistics.median(times[:, j]):6.3f} s"
              f" | CPU min {cpus[:, j].min():6.3f} s median {statistics.median(cpus[:, j]):6.3f} s")
    print(f"  LAC coverage {lac.coverage.mean():.4f}  set size {lac.set_size.mean():.4f}; "
          f"APS coverage {aps.coverage.mean():.4f}  set size {aps.set_size.mean():.4f}")

    t0 = clocks()
    naive = naive_loop(p, y, is_cal)
    t_naive, c_naive = clocks()[0] - t0[0], clocks()[1] - t0[1]
    same = all(c == lac.coverage[r] and s == lac.set_size[r] for r, (c, s) in enumerate(naive[0::2])) and all(
        c == aps.coverage[r] and s == aps.set_size[r] for r, (c, s) in enumerate(naive[1::2]))
    print(f"  naive numpy loop (per-split partition) wall {t_naive:6.3f} s, CPU {c_naive:6.3f} s; "
          f"identical to engine: {same}")

    if not args.skip_mapie:
        m = args.mapie_splits or R
        t0 = clocks()
        mres = mapie_loop(p, y, is_cal[:m])
        t_mapie, c_mapie = clocks()[0] - t0[0], clocks()[1] - t0[1]
        differ = [r for r, (c, s) in enumerate(mres["lac"]) if c != lac.coverage[r] or s != lac.set_size[r]]
        # MAPIE includes option j when (1 - p_j) - qhat <= 1e-8; ours is the exact 1 - p_j <= qhat. Check that every
        # split that differs is explained by a test score within 1e-8 above q-hat.
        table = build("lac", p)
        explained = 0
        for r in differ:
            test = ~is_cal[r]
            sets = (table.stat[test] - lac.qhat[r]) <= 1e-8
            explained += (sets[np.arange(test.sum()), y[test]].mean(), sets.sum(axis=1).mean()) == mres["lac"][r]
        mc = np.mean([c for c, _ in mres["aps"]])
        ms = np.mean([s for _, s in mres["aps"]])
        per, cper = t_mapie / m, c_mapie / m
        print(f"  MAPIE 1.6 loop over {m} splits: wall {t_mapie:6.2f} s ({1000 * per:.1f} ms/split), "
              f"CPU {c_mapie:6.2f} s ({1000 * cper:.1f} ms/split)")
        print(f"    LAC coverage and set size identical to the engine in {m - len(differ)}/{m} splits; "
              f"{explained}/{len(differ)} others differ only by MAPIE's 1e-8 inclusion tolerance")
        print(f"    MAPIE APS (randomised calibration scores, include_last_label=True): coverage {mc:.4f} "
              f"set size {ms:.4f} (a different definition; not compared)")
        print(f"  speed-up engine vs MAPIE for {R} splits: wall {per * R / times[:, 3].min():.0f}x, "
              f"CPU {cper * R / cpus[:, 3].min():.0f}x")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.parquet"
        LogitsArtifact(ids=[f"q{i:06d}" for i in range(n)], labels=y, logits=logits,
                       letters=[chr(65 + j) for j in range(k)],
                       provenance={"run_key": {"model": "synthetic", "task": "bench"}}).save(path)
        cmd = [sys.executable, "-m", "cpbench", "analyze", str(path), "--splits", str(R), "--json"]
        walls, cpus_cmd = [], []
        for _ in range(3):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            walls.append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus_cmd.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        print(f"  `cpbench analyze --splits {R} --json` (fresh process: imports, load, LAC+APS+metrics): "
              f"wall min {min(walls):.2f} s median {statistics.median(walls):.2f} s | CPU min {min(cpus_cmd):.2f} s")
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
