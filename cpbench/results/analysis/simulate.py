"""The population model behind the calibration checks of item-level intervals (tests and benchmarks/bench_paired.py).

A finite population of N items with six options (A-D plus E "I don't know" and F "None of the above"): gold option
drawn with probabilities (0.22, 0.22, 0.22, 0.22, 0.06, 0.06); option logits N(0, 1), the gold option raised by an
item easiness ~ N(2.0, 1.5) (accuracy about 0.68; LAC sets hold about 2.6 options at alpha = 0.1), E and F lowered
by 0.5. A compressed model is the same logits plus Gaussian noise of scale `sigma` (the same noise draw for every
sample: the perturbation is a property of the population), divided by a temperature. Item samples are drawn with
replacement (i.i.d. from the population), so the population value of any metric is its plug-in value on the whole
population at the quantile level tau_n the sample's analysis targets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cpbench.results.artifact import LogitsArtifact

LETTERS = ["A", "B", "C", "D", "E", "F"]
GOLD_P = (0.22, 0.22, 0.22, 0.22, 0.06, 0.06)


def population(size: int = 200_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels int64[N], baseline logits float32[N, 6])."""
    rng = np.random.default_rng([seed, 11])
    labels = rng.choice(6, size=size, p=GOLD_P)
    logits = rng.normal(0.0, 1.0, (size, 6))
    logits[:, 4:] -= 0.5
    logits[np.arange(size), labels] += rng.normal(2.0, 1.5, size)
    return labels.astype(np.int64), logits.astype(np.float32)


def perturb(logits: np.ndarray, sigma: float, temperature: float = 1.0, seed: int = 1, *,
            signal_loss: float = 0.0, labels: np.ndarray | None = None) -> np.ndarray:
    """A 'compressed' model: logits + sigma * fixed Gaussian noise, the gold option's logit lowered by
    signal_loss * (0.5 + Exp(1) per item) (compression erodes what the model knows, more on some items than others),
    all divided by the temperature."""
    rng = np.random.default_rng([seed, 12])
    out = logits.astype(np.float64) + sigma * rng.normal(0.0, 1.0, logits.shape)
    if signal_loss:
        if labels is None:
            raise ValueError("signal_loss needs the gold labels")
        out[np.arange(len(labels)), labels] -= signal_loss * (0.5 + rng.exponential(1.0, len(labels)))
    return (out / temperature).astype(np.float32)


def sample_indices(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, size, n)


def artifact(ids: list[str], labels: np.ndarray, logits: np.ndarray, model: str = "sim",
             letters: list[str] | None = None) -> LogitsArtifact:
    return LogitsArtifact(ids=ids, labels=labels, logits=logits, letters=list(letters or LETTERS[: logits.shape[1]]),
                          provenance={"model_id": model, "sample_data": False})


def sample_pair(labels: np.ndarray, base: np.ndarray, cand: np.ndarray, n: int,
                rng: np.random.Generator, letters: list[str] | None = None) -> tuple[LogitsArtifact, LogitsArtifact]:
    idx = sample_indices(len(labels), n, rng)
    ids = [f"i{j:06d}" for j in range(n)]
    return (artifact(ids, labels[idx], base[idx], "base", letters),
            artifact(ids, labels[idx], cand[idx], "cand", letters))


CHECKED = ("d_acc", "d_lac.coverage", "d_lac.set_size", "flip_cw")


@dataclass
class CoverageRun:
    n: int
    draws: int
    truth: dict[str, float]
    covered: dict[str, float]  # share of draws whose item-level interval holds the population value
    split_covered: dict[str, float]  # the same for the old split-to-split interval (record-backed deltas only)
    width: dict[str, float]  # mean item-level interval width


def binom_sf(n: int, k: int, p: np.ndarray) -> np.ndarray:
    """P(Binomial(n, p) >= k) for every p (numpy only; exact sums of the pmf, in chunks)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.where(p >= 1.0, 1.0, 0.0) if k > 0 else np.ones_like(p)
    if k <= 0:
        return out
    i = np.arange(k, n + 1, dtype=np.float64)
    from math import lgamma

    lc = np.array([lgamma(n + 1) - lgamma(j + 1) - lgamma(n - j + 1) for j in range(k, n + 1)])
    inner = np.flatnonzero((p > 0) & (p < 1))
    for c in range(0, len(inner), 512):
        idx = inner[c:c + 512]
        q = p[idx][:, None]
        logpmf = lc[None, :] + i[None, :] * np.log(q) + (n - i)[None, :] * np.log1p(-q)
        out[idx] = np.minimum(1.0, np.exp(logpmf).sum(1))
    return out


def procedure_values(view, score: str, n: int) -> dict[str, float]:
    """The estimand of a record's set-based numbers on a population (`view`: every population item, weight 1):
    E over calibration parts of n_cal items drawn i.i.d. from the population of the population's mean set size,
    coverage and UAcc at that part's q-hat (the k-th smallest of its n_cal calibration scores, k the analysis' order
    statistic). A record of n i.i.d. items estimates exactly this: in every split the calibration part is n_cal
    i.i.d. items and the test part independent i.i.d. items, so the split mean of test-set size and coverage is
    unbiased for it at any n (UAcc, a ratio, to O(1 / n_test)).

    q-hat's law: P(q-hat <= v) = P(Binomial(n_cal, F(v)) >= k), F the population CDF of the calibration scores."""
    from cpbench.results.conformal.quantile import order_statistic
    from cpbench.results.conformal.splits import calibration_size

    n_cal = calibration_size(n, view.cal_ratio)
    k = order_statistic(n_cal, float(view.alpha), view.quantile_rule)
    prep = view.score(score)
    N = len(prep.cal)
    vals = np.unique(prep.cal_sorted)
    F = np.searchsorted(prep.cal_sorted, vals, side="right") / N
    cdf = binom_sf(n_cal, k, F)
    pmf = np.diff(np.concatenate([[0.0], cdf]))
    keep = pmf > 1e-15
    vals, pmf = vals[keep], pmf[keep] / pmf[keep].sum()
    out = {}
    for what in ("size", "coverage"):
        thr = np.sort(np.asarray(prep.thresholds(what), dtype=np.float64).ravel())
        at = np.searchsorted(thr, vals, side="right") / N  # mean number of options (gold options) with x <= q-hat
        if view.empty == "top1" and what == "size":
            raise ValueError("procedure values are for the default protocol (empty sets allowed)")
        out[what] = at
    acc = float(view.values[:, 0].mean())
    size = float(pmf @ out["size"])
    inv = np.where(out["size"] > 0, 1.0 / np.maximum(out["size"], 1e-300), 0.0)
    return {"set_size": size, "coverage": float(pmf @ out["coverage"]),
            "uacc": float(acc * np.sqrt(view.k) * (pmf @ inv)), "set_size_sd": float(np.sqrt(max(
                pmf @ out["size"] ** 2 - size**2, 0.0)))}


def population_values(labels: np.ndarray, base: np.ndarray, cand: np.ndarray, n: int, alpha: float = 0.1,
                      cal_ratio: float = 0.5, scores: tuple[str, ...] = ("lac",), letters: list[str] | None = None,
                      estimand: str = "procedure") -> dict[str, float]:
    """Population value of every delta and pair metric for item samples of n.

    Accuracy, calibration measures and the item-by-item diagnostics that do not involve sets: their mean over the
    population. Set size, coverage, UAcc (`estimand="procedure"`, what records estimate): `procedure_values` for
    each model, also `cand.<score>.coverage`. `estimand="plug-in"`: the earlier definition, the population's value at
    its own tau_n-quantile (tau_n = k / (n_cal + 1)), which a split average estimates with a finite-n bias. Set churn,
    Jaccard and newly confidently wrong: the plug-in at the population's tau_n-quantile (what their full-sample
    estimates target)."""
    from cpbench.results.analysis.bootstrap import paired_draws
    from cpbench.results.analysis.item_views import item_view

    ids = [f"p{j:07d}" for j in range(len(labels))]
    vb = item_view(artifact(ids, labels, base, letters=letters), alpha=alpha, cal_ratio=cal_ratio)
    vc = item_view(artifact(ids, labels, cand, letters=letters), alpha=alpha, cal_ratio=cal_ratio)
    from cpbench.results.conformal.quantile import order_statistic
    from cpbench.results.conformal.splits import calibration_size

    n_cal = calibration_size(n, cal_ratio)  # tau_n of a sample of n (n may exceed the population: draws are i.i.d.)
    tau_n = order_statistic(n_cal, float(alpha), vb.quantile_rule) / (n_cal + 1)
    d = paired_draws(vb, vc, scores, weights=np.ones((1, len(labels))), tau=tau_n)
    out = {f"d_{k}": float(d.cand[k][0] - d.base[k][0]) for k in d.base}
    out.update({k: float(v[0]) for k, v in d.pair.items()})
    for s in scores:
        out[f"cand.{s}.coverage"] = float(d.cand[f"{s}.coverage"][0])
        if estimand == "procedure":
            pb, pc = procedure_values(vb, s, n), procedure_values(vc, s, n)
            for m in ("set_size", "coverage", "uacc"):
                out[f"d_{s}.{m}"] = pc[m] - pb[m]
            out[f"cand.{s}.coverage"] = pc["coverage"]
    return out


def coverage_run(labels: np.ndarray, base: np.ndarray, cand: np.ndarray, n: int, draws: int, *, splits: int = 20,
                 n_boot: int = 200, seed: int = 0, level: float = 0.95,
                 metrics: tuple[str, ...] = CHECKED) -> CoverageRun:
    """Draw `draws` item samples of size n, analyse both models as `cpbench run` does (default protocol, `splits`
    random splits), and count how often each interval holds the population value."""
    from cpbench.results.analysis.compare import RecordNumbers, compare_numbers
    from cpbench.results.conformal.protocols import analyze_artifact, preset

    truth = population_values(labels, base, cand, n)
    key = preset("default", splits=splits)
    rng = np.random.default_rng([seed, n, 13])
    hit = {m: 0 for m in metrics}
    split_hit = {m: 0 for m in metrics}
    width = {m: 0.0 for m in metrics}
    for _ in range(draws):
        a, b = sample_pair(labels, base, cand, n, rng)
        ra, rb = analyze_artifact(a, key, ("lac",)), analyze_artifact(b, key, ("lac",))
        est = compare_numbers(a, b, RecordNumbers.from_record(ra), RecordNumbers.from_record(rb), ("lac",),
                              n_boot=n_boot, seed=int(rng.integers(1 << 30)), level=level)
        for m in metrics:
            e = est[m]
            hit[m] += e.lo <= truth[m] <= e.hi
            width[m] += (e.hi - e.lo) / draws
            if np.isfinite(e.split_lo):
                # the old interval: 2.5/97.5 percentiles of the paired bootstrap over splits of the mean difference
                from cpbench.results.analysis.stats import paired_bootstrap

                key_m = m[2:]
                ps_a = ra["per_split"]["acc"] if key_m == "acc" else ra["per_split"]["lac"][key_m.split(".")[1]]
                ps_b = rb["per_split"]["acc"] if key_m == "acc" else rb["per_split"]["lac"][key_m.split(".")[1]]
                _, lo, hi = paired_bootstrap(np.asarray(ps_b), np.asarray(ps_a), n_boot=500, level=level)
                split_hit[m] += lo <= truth[m] <= hi
    return CoverageRun(n, draws, truth, {m: hit[m] / draws for m in metrics},
                       {m: split_hit[m] / draws for m in metrics}, width)


def tuned(labels: np.ndarray, base: np.ndarray, make, target: float, n: int, lo: float, hi: float, *,
          metric: str = "d_lac.set_size", iters: int = 16) -> tuple[np.ndarray, float]:
    """(candidate, knob) with `make(knob)`'s population `metric` equal to `target` (bisection; metric monotone in
    the knob between lo and hi)."""
    def value(x: float) -> float:
        return population_values(labels, base, make(x), n)[metric] - target

    a, b = lo, hi
    fa = value(a)
    for _ in range(iters):
        mid = 0.5 * (a + b)
        fm = value(mid)
        if (fm > 0) == (fa > 0):
            a, fa = mid, fm
        else:
            b = mid
    return make(0.5 * (a + b)), 0.5 * (a + b)


@dataclass
class GateRun:
    n: int
    draws: int
    truth: float
    passed: float
    failed: float
    inconclusive: float
    se_mean: float  # mean item-level standard error of the set-size difference


def gate_run(labels: np.ndarray, base: np.ndarray, cand: np.ndarray, n: int, draws: int, limit: float, *,
             splits: int = 20, n_boot: int = 300, seed: int = 0, level: float = 0.95) -> GateRun:
    """Operating characteristics of `cpbench check --max-set-size-increase limit` on one LAC cell: the share of item
    samples that pass, fail and stay inconclusive (the gate's own decision code on the paired estimates)."""
    from cpbench.results.analysis.compare import RecordNumbers, compare_numbers
    from cpbench.results.conformal.protocols import analyze_artifact, preset
    from cpbench.results.gate import Decision, Limits, _cell_checks, _decide

    truth = population_values(labels, base, cand, n)["d_lac.set_size"]
    key = preset("default", splits=splits)
    rng = np.random.default_rng([seed, n, 17])
    limits = Limits(max_set_size_increase=limit)
    decision = Decision(level=level, n_boot=n_boot)
    counts = {"pass": 0, "fail": 0, "inconclusive": 0}
    se_sum = 0.0
    for _ in range(draws):
        a, b = sample_pair(labels, base, cand, n, rng)
        ra, rb = analyze_artifact(a, key, ("lac",)), analyze_artifact(b, key, ("lac",))
        est = compare_numbers(a, b, RecordNumbers.from_record(ra), RecordNumbers.from_record(rb), ("lac",),
                              n_boot=n_boot, seed=int(rng.integers(1 << 30)))
        rows = [{"status": "pass", "reasons": ""}]
        _decide(rows, _cell_checks(0, None, {"score": "lac"}, limits, est), decision)
        counts[rows[0]["status"]] += 1
        se_sum += est["d_lac.set_size"].se
    return GateRun(n, draws, truth, counts["pass"] / draws, counts["fail"] / draws, counts["inconclusive"] / draws,
                   se_sum / draws)


LIMIT_TYPES = ("set_size", "acc", "coverage", "flip")


@dataclass
class CalibrationRun:
    """One (population pair, n): share of item samples whose printed 95 % interval holds the population value, per
    estimate name; and the gate's pass rate with each limit set exactly at the population value (fixed n, one cell,
    one limit: a pass there is a false pass, which must happen in <= 5 % of samples)."""

    n: int
    draws: int
    truth: dict[str, float]
    covered: dict[str, float]
    mean_se: dict[str, float]
    gate_pass_at_limit: dict[str, float]
    limits: dict[str, float]
    floored: dict[str, float]  # share of samples whose se sat at its floor
    extra: dict[str, float] = None  # e.g. coverage of the plug-in estimand


def _limit_checks(truth: dict[str, float], scores: tuple[str, ...]) -> dict[str, tuple[str, float, bool]]:
    """(estimate name, limit, estimate within means below the limit) per limit type and score, with the limit at
    the population value; pairs whose value is on the side a limit cannot take (a negative increase) are tested
    on the reversed difference, i.e. with the roles of the two models swapped, by the caller."""
    out = {}
    for s in scores:
        out[f"set_size.{s}"] = (f"d_{s}.set_size", truth[f"d_{s}.set_size"], True)
        out[f"coverage.{s}"] = (f"cand.{s}.coverage", truth[f"cand.{s}.coverage"], False)
    out["acc"] = ("d_acc", -truth["d_acc"], True)  # accuracy drop = -d_acc
    out["flip"] = ("flip_cw", truth["flip_cw"], True)
    return out


def calibration_run(labels: np.ndarray, base: np.ndarray, cand: np.ndarray, n: int, draws: int, *,
                    scores: tuple[str, ...] = ("lac", "aps"), letters: list[str] | None = None, splits: int = 100,
                    n_boot: int = 300, seed: int = 0, level: float = 0.95,
                    metrics: tuple[str, ...] | None = None) -> CalibrationRun:
    """Draw `draws` item samples of n (with replacement), analyse both models as `cpbench run` does (default
    protocol, `splits` random splits), compare them as the leaderboard and the gate do, and count how often each
    interval holds the population value (`population_values`, procedure estimand) and how often a one-sided 95 %
    gate test with the limit at the population value passes."""
    from cpbench.results.analysis.compare import RecordNumbers, compare_numbers
    from cpbench.results.analysis.decisions import Directional
    from cpbench.results.conformal.protocols import analyze_artifact, preset

    truth = population_values(labels, base, cand, n, scores=scores, letters=letters)
    plug = population_values(labels, base, cand, n, scores=scores, letters=letters, estimand="plug-in")
    if metrics is None:
        metrics = ("d_acc", "d_ece", "d_brier", "flip_cw", "flip_wc", "agreement", "kl", *(
            f"{p}{s}.{m}" for s in scores for p, m in (("d_", "coverage"), ("d_", "set_size"), ("d_", "uacc"),
                                                         ("cand.", "coverage"), ("", "churn"), ("", "jaccard"))))
    checks = _limit_checks(truth, scores)
    key = preset("default", splits=splits)
    rng = np.random.default_rng([seed, n, 19])
    hit = dict.fromkeys(metrics, 0)
    hit_plug = {m: 0 for m in metrics if m.endswith((".set_size", ".coverage", ".uacc")) and m.startswith("d_")}
    se_sum = dict.fromkeys(metrics, 0.0)
    floored = dict.fromkeys(metrics, 0)
    passed = dict.fromkeys(checks, 0)
    z = None
    for _ in range(draws):
        a, b = sample_pair(labels, base, cand, n, rng, letters)
        ra, rb = analyze_artifact(a, key, scores), analyze_artifact(b, key, scores)
        est = compare_numbers(a, b, RecordNumbers.from_record(ra), RecordNumbers.from_record(rb), scores,
                              n_boot=n_boot, seed=int(rng.integers(1 << 30)), level=level)
        for m in metrics:
            e = est[m]
            hit[m] += e.lo <= truth[m] <= e.hi
            se_sum[m] += e.se / draws
            floored[m] += "floor" in e.note
            if m in hit_plug:
                hit_plug[m] += e.lo <= plug[m] <= e.hi
        for name, (m, lim, good_below) in checks.items():
            e = est[m]
            if m == "d_acc":
                e = e.negated()
            if good_below and lim < 0:  # a negative increase limit: test the reversed difference
                e, lim = e.negated(), -lim
            t = Directional.test(e, lim)
            shown = math.isfinite(t.p) and t.p <= 1.0 - level
            passed[name] += shown and t.below == good_below
    return CalibrationRun(n, draws, truth, {m: hit[m] / draws for m in metrics}, se_sum,
                          {k: v / draws for k, v in passed.items()}, {k: v[1] for k, v in checks.items()},
                          {m: floored[m] / draws for m in metrics},
                          {f"plug-in {m}": hit_plug[m] / draws for m in hit_plug} | {
                              f"truth plug-in {m}": plug[m] for m in hit_plug})
