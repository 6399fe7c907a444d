"""Calibration, gate operating characteristics, items needed and cost of cpbench's item-level paired intervals, on
real populations (option logits this project produced on real items) and on the Gaussian population model.

Populations:

- real (`--population DIR`, repeatable; `--pair BASE CAND`, repeatable): option logits of the same items under a
  base and a candidate model: `--pair` takes whatever `cpbench analyze` reads (cpbench `.parquet` artifacts, lm-eval
  samples `.jsonl`, LLM-Uncertainty-Bench `.pkl` with `--labels DATA.json`), so published outputs of two models on
  one task are a population too. `--population DIR` pairs every `<model>/<recipe>/artifacts/<task>
  .parquet` under DIR with the same model's `base` artifact of the same task (same ids and labels); `--recipes`
  keeps only the named candidate recipes. The population is the empirical distribution of the artifact's N items;
  item samples of n are drawn from them with replacement (i.i.d. from the population), so n may exceed N (n = 5,000
  from N = 2,000 real items), and the population value is the empirical distribution's value.
- Gaussian (cpbench.results.analysis.simulate, unless --no-gaussian): N = 200,000 items, six options; see docs/conformal.md.

Estimand (docs/conformal.md, "Estimand"): accuracy, calibration measures, flips, agreement, KL: their population
mean; set size, coverage and UAcc: the expected value of the split-conformal procedure calibrated on n_cal i.i.d.
items of the population (`simulate.procedure_values`), the candidate's own coverage included; set churn and Jaccard:
the plug-in at the population's tau_n quantile. Each sample is analysed as `cpbench run` does (default protocol,
textbook quantile, alpha 0.1, cal_ratio 0.5, 100 splits) and compared as the leaderboard and the gate do (B = 300).

Gate at the limit: for each limit type (set-size increase per score, candidate coverage per score, accuracy drop,
flip rate) a one-cell, one-limit gate with the limit set exactly at the population value (a negative difference is
tested on the reversed pair): the share of samples that pass, which must be <= 5 % (fixed n).

Usage:
  OMP_NUM_THREADS=1 python benchmarks/bench_paired.py --population /work/study-results --draws 300
  OMP_NUM_THREADS=1 python benchmarks/bench_paired.py --pair base.parquet cand.parquet --sizes 100,300
  OMP_NUM_THREADS=1 python benchmarks/bench_paired.py --pair Llama-2-7b-hf_mmlu_10k_base_icl1.pkl \
      Llama-2-13b-hf_mmlu_10k_base_icl1.pkl --labels mmlu_10k.json       # published outputs of two models
  OMP_NUM_THREADS=1 python benchmarks/bench_paired.py --quick          # a smoke run
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # a script may set its own process's threads (library code never does)

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from cpbench.results.analysis import simulate as S  # noqa: E402
from cpbench.results.analysis.compare import RecordNumbers, compare_numbers  # noqa: E402
from cpbench.results.analysis.estimate import z_of  # noqa: E402
from cpbench.results.conformal.protocols import analyze_artifact, preset  # noqa: E402

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
    print(f"\n## Cost of one cell pair, n = {n:,} items, B = 300 replicates, every estimate's interval, one core\n")
    rng = np.random.default_rng(9)
    a, b = S.sample_pair(lab, base, cand, n, rng)
    key = preset("default", splits=splits)
    ra, rb = analyze_artifact(a, key, ("lac", "aps")), analyze_artifact(b, key, ("lac", "aps"))
    na, nb = RecordNumbers.from_record(ra), RecordNumbers.from_record(rb)
    from cpbench.results.analysis import bootstrap as B
    from cpbench.results.analysis import item_views as V

    def timed(scores, cold) -> tuple[float, float]:
        cpu, wall = [], []
        for _ in range(repeats):
            B._DRAWS.clear()  # the comparison itself is always recomputed
            if cold:
                V._VIEWS.clear()
                B.boot_counts.cache_clear()
            t, c = time.perf_counter(), time.process_time()
            est = compare_numbers(a, b, na, nb, scores)
            for e in est.values():  # every printed interval and one test: what one look at a cell pair does
                e.lo, e.hi, e.p_below(0.1)
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


def look_cost(base_path: str, cand_path: str, n: int = 10_000, repeats: int = 7) -> None:
    """CPU seconds of one sequential-gate look (`cpbench.run.seqrun.look_statistics`: both prefixes' records, LAC and
    APS, and the gate's paired bootstrap with B = 300 and one-sided tests for four limits) at one cell pair of n
    items: a real pair resampled to n items, every cache cleared before each look (each look has a new n)."""
    from cpbench.run import seqrun
    from cpbench.results.analysis import bootstrap as B
    from cpbench.results.analysis import item_views as V
    from cpbench.results.artifact import LogitsArtifact
    from cpbench.results.conformal import splits as SP
    from cpbench.results.gate import Decision, Limits

    A, C = LogitsArtifact.load(base_path), LogitsArtifact.load(cand_path)
    idx = np.random.default_rng(9).integers(0, A.n, n)
    ids = [f"i{j:06d}" for j in range(n)]
    a, b = (LogitsArtifact(ids=ids, labels=X.labels[idx], logits=X.logits[idx], letters=X.letters,
                           provenance=X.provenance) for X in (A, C))
    limits = Limits(max_set_size_increase=0.25, max_accuracy_drop=0.02, min_coverage=0.85, max_flip_rate=0.1)
    key = preset("default", splits=100)

    def look() -> None:
        B._DRAWS.clear(), V._VIEWS.clear(), B._COMMON.clear(), SP._SPLITS.clear()
        B.boot_counts.cache_clear(), B._boot_counts_t.cache_clear()
        seqrun.look_statistics([("cell", a, b)], n, limits, Decision(), key, ("lac", "aps"))

    look()  # imports
    cpu, wall = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        look()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    print(f"one sequential look, one cell pair of {n:,} items ({Path(cand_path).parent.parent.name} vs base, "
          f"resampled), LAC + APS, four limits, B = 300, caches cleared: median CPU {statistics.median(cpu):.3f} s "
          f"(min {min(cpu):.3f}), median wall {statistics.median(wall):.3f} s, {repeats} looks; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _canonical(art):
    from cpbench.results.conformal.splits import canonical_order

    idx = canonical_order(art.ids)
    return ([art.ids[i] for i in idx], np.asarray(art.labels, dtype=np.int64)[idx],
            np.asarray(art.logits, dtype=np.float32)[idx], list(art.letters))


def load_pair(base_path: str, cand_path: str, labels: str | None = None
              ) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, list[str]] | None:
    from cpbench.backends.pickles import load_any  # what `cpbench analyze` reads, chosen by extension

    ib, lb, xb, letters = _canonical(load_any(base_path, labels))
    ic, lc, xc, letters_c = _canonical(load_any(cand_path, labels))
    if ib != ic or not np.array_equal(lb, lc) or xb.shape != xc.shape:
        print(f"skipped {cand_path}: not the items of {base_path}")
        return None
    parts = Path(cand_path).parts
    stem = Path(cand_path).stem
    if stem.count("__") >= 3 and len(parts) >= 4:  # cpbench run's <model>/<recipe>/artifacts/<key>.parquet
        name = "/".join(parts[-4:-2] + (stem.split("__")[2],))
    else:
        name = f"{Path(base_path).name} vs {Path(cand_path).name}"
    return name, lb, xb, xc, letters


def find_pairs(root: str) -> list[tuple[str, str]]:
    out = []
    for cand in sorted(Path(root).glob("*/*/artifacts/*.parquet")):
        recipe_dir = cand.parent.parent
        if recipe_dir.name == "base":
            continue
        names = (cand.name.replace(f"__{recipe_dir.name}__", "__base__", 1), cand.name)  # cpbench run's file names
        base = next((b for b in (recipe_dir.parent / "base" / "artifacts" / nm for nm in names) if b.is_file()), None)
        if base is not None:
            out.append((str(base), str(cand)))
    return out


def _mc(p: float, draws: int) -> float:
    return 100 * math.sqrt(max(p * (1 - p), 0.95 * 0.05) / draws)


def real_tables(name, lab, base, cand, letters, sizes, draws, scores, splits, n_boot) -> dict[int, S.CalibrationRun]:
    N = len(lab)
    print(f"\n### {name}: N = {N:,} items, K = {base.shape[1]} options\n")
    runs = {}
    for n in sizes:
        # samples are i.i.d. draws with replacement from the population's N items, so n may exceed N: the population
        # value is then the empirical distribution's value, as at every n
        t = time.perf_counter()
        runs[n] = S.calibration_run(lab, base, cand, n, draws[n], scores=scores, letters=letters, splits=splits,
                                    n_boot=n_boot, seed=n)
        runs[n].extra["seconds"] = time.perf_counter() - t
    if not runs:
        return runs
    r0 = next(iter(runs.values()))
    metrics = list(r0.covered)
    print("Share of samples whose 95 % interval holds the population value, % (Monte Carlo se in brackets):\n")
    print("| metric | population value (n = " + f"{min(runs):,})" + " | " + " | ".join(
        f"n = {n:,} ({runs[n].draws} samples)" for n in runs) + " |")
    print("|---|---|" + "---|" * len(runs))
    for m in metrics:
        cells = [f"{100 * runs[n].covered[m]:.1f} ({_mc(runs[n].covered[m], runs[n].draws):.1f})"
                 + (f" f{100 * runs[n].floored[m]:.0f}" if runs[n].floored[m] > 0 else "") for n in runs]
        print(f"| {m} | {r0.truth[m]:+.4f} | " + " | ".join(cells) + " |")
    print("\n(fNN: share of samples whose se sat at its floor, %.)\n")
    print("Gate with the limit at the population value (one cell, one limit, one-sided 95 %): pass rate, % (must be "
          "<= 5):\n")
    print("| limit | value (n = " + f"{min(runs):,})" + " | " + " | ".join(f"n = {n:,}" for n in runs) + " |")
    print("|---|---|" + "---|" * len(runs))
    for k in r0.gate_pass_at_limit:
        print(f"| {k} | {r0.limits[k]:+.4f} | " + " | ".join(
            f"{100 * runs[n].gate_pass_at_limit[k]:.1f} ({_mc(0.05, runs[n].draws):.1f})" for n in runs) + " |")
    theta = r0.limits.get("flip")
    if theta is not None:  # a flip count of n i.i.d. draws is Binomial(n, theta): the pass rate without Monte Carlo
        print("| flip, exact over every count | " + f"{theta:+.4f} | " + " | ".join(
            f"{100 * exact_flip_pass(theta, n):.2f} (exact)" for n in runs) + " |")
    acc = exact_acc_rates(lab, base, cand)
    if acc is not None:
        print("| acc, Tango on the full-sample counts, exact over every count | " + f"{acc[0] - acc[1]:+.4f} | "
              + " | ".join(f"{100 * exact_acc_pass(*acc, n):.2f} (exact)" for n in runs) + " |")
    plug = [m for m in r0.extra if m.startswith("plug-in ")]
    if plug:
        print("\nThe same intervals against the earlier estimand (plug-in at the population's tau_n quantile), %:\n")
        print("| metric | " + " | ".join(f"n = {n:,}" for n in runs) + " |")
        print("|---|" + "---|" * len(runs))
        for m in plug:
            print(f"| {m[8:]} (value {r0.extra['truth ' + m]:+.4f} vs {r0.truth[m[8:]]:+.4f}) | " + " | ".join(
                f"{100 * runs[n].extra[m]:.1f}" for n in runs) + " |")
    print("\nseconds per n: " + ", ".join(f"{n:,}: {runs[n].extra['seconds']:.0f}" for n in runs), flush=True)
    return runs


def exact_flip_pass(theta: float, n: int, alpha: float = 0.05) -> float:
    """Probability that the gate shows a flip rate below a limit equal to the true rate theta, summed over every
    count k of n items (k ~ Binomial(n, theta) exactly, as the samples here are i.i.d. draws): the shipped estimate's
    own test (`Estimate.p_below`), no Monte Carlo error."""
    from cpbench.results.analysis import binomial
    from cpbench.results.analysis.estimate import Estimate

    total, k = 0.0, 0
    while k <= n and Estimate("flip_cw", k / n, 0.0, n=n, method="binomial").p_below(theta) <= alpha:
        total += binomial.cdf(k, n, theta) - binomial.cdf(k - 1, n, theta)
        k += 1
    return total


def exact_acc_rates(lab: np.ndarray, base: np.ndarray, cand: np.ndarray) -> tuple[float, float] | None:
    """(loss, gain) shares of the population (base right and candidate wrong, and the reverse), ordered so that the
    accuracy drop loss - gain is >= 0 (a gain is tested on the reversed pair, as the gate rows are); None if equal."""
    right_b, right_c = base.argmax(1) == lab, cand.argmax(1) == lab
    loss, gain = float(np.mean(right_b & ~right_c)), float(np.mean(~right_b & right_c))
    return None if loss == gain else (max(loss, gain), min(loss, gain))


def exact_acc_pass(loss: float, gain: float, n: int, alpha: float = 0.05) -> float:
    """Probability that the accuracy-drop test shows a drop below a limit equal to the true drop, summed over the
    (loss, gain) counts of n items (trinomial, exactly, for i.i.d. draws), counts within 9 sd of their means. The
    test is the shipped one (`Estimate` with Tango's paired score statistic) on the full-sample counts; the gate
    reads the record's split-averaged accuracy instead, which differs from the full-sample one by a split term of a
    few thousandths of its se, so this is its level up to that term, without Monte Carlo error."""
    from cpbench.results.analysis.estimate import Estimate

    limit = loss - gain

    def logpmf(k: int, m: int, p: float) -> float:
        if p <= 0.0:
            return 0.0 if k == 0 else -math.inf
        if p >= 1.0:
            return 0.0 if k == m else -math.inf
        return (math.lgamma(m + 1) - math.lgamma(k + 1) - math.lgamma(m - k + 1) + k * math.log(p)
                + (m - k) * math.log1p(-p))

    def window(m: int, p: float) -> range:
        sd = math.sqrt(m * p * (1 - p))
        return range(max(0, int(m * p - 9 * sd) - 1), min(m, int(m * p + 9 * sd) + 2) + 1)

    total = 0.0
    for b in window(n, loss):  # items lost (base right, candidate wrong)
        lb = logpmf(b, n, loss)
        q = gain / (1.0 - loss) if loss < 1 else 0.0
        for c in window(n - b, q):  # items gained, given b
            est = Estimate("d_acc", (c - b) / n, 0.0, n=n, method="paired", discordant=(c / n, b / n))
            drop = est.negated("accuracy drop")
            if drop.point < limit and drop.p_below(limit) <= alpha:
                total += math.exp(lb + logpmf(c, n - b, q))
    return total


def real_items_needed(name: str, runs: dict[int, S.CalibrationRun], scores) -> None:
    """Items for an 80 % chance to pass when the true difference is zero (one cell, one limit, one-sided 95 %), from
    the pair's measured mean se at the largest n (se * sqrt(n) is the per-item sd; set size) and its discordance
    (accuracy)."""
    if not runs:
        return
    n_ref = max(runs)
    r = runs[n_ref]
    z = z_of(0.95) + z_of(0.80)
    print(f"\nItems needed, {name} (se measured at n = {n_ref:,}, mean over {r.draws} samples, scaled as 1/sqrt(n)):"
          "\n")
    print("| limit | value | items |")
    print("|---|---|---|")
    for s in scores:
        se = r.mean_se[f"d_{s}.set_size"]
        for lim in (0.1, 0.25, 0.5):
            print(f"| --max-set-size-increase ({s}) | {lim} | {math.ceil(n_ref * (z * se / lim) ** 2):,} |")
    # accuracy: Tango's test of the drop against L when the true difference is 0, with the pair's discordance d:
    # per-item variance d under the truth, about d + L - L^2 under the null at the margin
    disc = r.truth["flip_cw"] + r.truth["flip_wc"]
    for lim in (0.01, 0.02, 0.05):
        n_a = ((z_of(0.95) * math.sqrt(disc + lim - lim * lim) + z_of(0.80) * math.sqrt(disc)) / lim) ** 2
        print(f"| --max-accuracy-drop (discordant items {100 * disc:.1f} %) | {lim} | {math.ceil(n_a):,} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer draws (a smoke run, not the documented figures)")
    ap.add_argument("--population", action="append", default=[], help="results directory of real artifacts")
    ap.add_argument("--pair", nargs=2, action="append", default=[], metavar=("BASE", "CAND"),
                    help="two files of the same items: .parquet, lm-eval samples .jsonl, or .pkl with --labels")
    ap.add_argument("--labels", default=None, help="with a .pkl --pair: the task's dataset file (as cpbench analyze)")
    ap.add_argument("--recipes", default="", help="with --population: only these candidate recipes (comma list)")
    ap.add_argument("--look-cost", default="", metavar="BASE,CAND",
                    help="time one sequential look (records + gate, LAC and APS) of this real pair resampled to "
                         "10,000 items, and exit")
    ap.add_argument("--sizes", default="100,300,1000,5000")
    ap.add_argument("--draws", type=int, default=300, help="item samples per n (real populations)")
    ap.add_argument("--draws-5000", type=int, default=150, help="item samples at n >= 5000")
    ap.add_argument("--scores", default="lac,aps")
    ap.add_argument("--no-gaussian", action="store_true")
    ap.add_argument("--gaussian-old", action="store_true", help="also the earlier LAC-only Gaussian tables")
    ap.add_argument("--no-cost", action="store_true")
    args = ap.parse_args()
    q = args.quick
    sizes = tuple(int(x) for x in args.sizes.split(","))
    scores = tuple(args.scores.split(","))
    draws = {n: (20 if q else (args.draws if n < 5000 else args.draws_5000)) for n in sizes}
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load average at start "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cores")
    t0 = time.perf_counter()
    pairs = [tuple(p) for p in args.pair]
    if args.look_cost:
        look_cost(*args.look_cost.split(","), repeats=2 if q else 7)
        return
    keep = set(filter(None, args.recipes.split(",")))
    for root in args.population:
        pairs += [p for p in find_pairs(root) if not keep or Path(p[1]).parent.parent.name in keep]
    for bp, cp in pairs:
        got = load_pair(bp, cp, args.labels)
        if got is None:
            continue
        name, lab, xb, xc, letters = got
        runs = real_tables(name, lab, xb, xc, letters, sizes, draws, scores, 100, 300)
        real_items_needed(name, runs, scores)
    if not args.no_gaussian:
        lab, base = S.population(200_000)
        cand = S.perturb(base, 0.3, signal_loss=0.1, labels=lab)
        runs = real_tables("Gaussian population (sigma 0.3 noise, signal loss 0.1)", lab, base, cand, None, sizes,
                           draws, scores, 100, 300)
        real_items_needed("Gaussian population", runs, scores)
        if args.gaussian_old:
            old_sizes = (100, 300, 1000, 10_000)
            old = {100: 60, 300: 60, 1000: 40, 10_000: 10} if q else {100: 1000, 300: 1000, 1000: 600, 10_000: 200}
            coverage_table(lab, base, cand, old_sizes, old, splits=100, n_boot=300)
            gate_table(lab, base, 1000, 40 if q else 400, 0.25, splits=100, n_boot=300, iters=8 if q else 14)
            items_needed(lab, base, draws=10 if q else 40, splits=100)
        if not args.no_cost:
            cost(lab, base, cand, repeats=2 if q else 5)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s wall, {time.process_time():.0f} s CPU; load average at end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    from cpbench.base.errors import CpbenchError

    try:
        main()
    except CpbenchError as exc:  # a file it cannot read as a population: one line, as the CLI says it
        sys.exit(f"bench_paired: {exc}")
