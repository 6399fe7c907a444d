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

from dataclasses import dataclass

import numpy as np

from cpbench.artifact import LogitsArtifact

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


def artifact(ids: list[str], labels: np.ndarray, logits: np.ndarray, model: str = "sim") -> LogitsArtifact:
    return LogitsArtifact(ids=ids, labels=labels, logits=logits, letters=list(LETTERS),
                          provenance={"model_id": model, "sample_data": False})


def sample_pair(labels: np.ndarray, base: np.ndarray, cand: np.ndarray, n: int,
                rng: np.random.Generator) -> tuple[LogitsArtifact, LogitsArtifact]:
    idx = sample_indices(len(labels), n, rng)
    ids = [f"i{j:06d}" for j in range(n)]
    return artifact(ids, labels[idx], base[idx], "base"), artifact(ids, labels[idx], cand[idx], "cand")


CHECKED = ("d_acc", "d_lac.coverage", "d_lac.set_size", "flip_cw")


@dataclass
class CoverageRun:
    n: int
    draws: int
    truth: dict[str, float]
    covered: dict[str, float]  # share of draws whose item-level interval holds the population value
    split_covered: dict[str, float]  # the same for the old split-to-split interval (record-backed deltas only)
    width: dict[str, float]  # mean item-level interval width


def population_values(labels: np.ndarray, base: np.ndarray, cand: np.ndarray, n: int, alpha: float = 0.1,
                      cal_ratio: float = 0.5, scores: tuple[str, ...] = ("lac",)) -> dict[str, float]:
    """Population value of every delta and pair metric, at the quantile level a sample of n items targets."""
    from cpbench.analysis.paired import item_view, paired_draws

    ids = [f"p{j:07d}" for j in range(len(labels))]
    vb = item_view(artifact(ids, labels, base), alpha=alpha, cal_ratio=cal_ratio)
    vc = item_view(artifact(ids, labels, cand), alpha=alpha, cal_ratio=cal_ratio)
    probe = item_view(artifact([f"s{j}" for j in range(n)], labels[:n], base[:n]), alpha=alpha, cal_ratio=cal_ratio)
    d = paired_draws(vb, vc, scores, weights=np.ones((1, len(labels))), tau=probe.tau())
    out = {f"d_{k}": float(d.cand[k][0] - d.base[k][0]) for k in d.base}
    out.update({k: float(v[0]) for k, v in d.pair.items()})
    return out


def coverage_run(labels: np.ndarray, base: np.ndarray, cand: np.ndarray, n: int, draws: int, *, splits: int = 20,
                 n_boot: int = 200, seed: int = 0, level: float = 0.95,
                 metrics: tuple[str, ...] = CHECKED) -> CoverageRun:
    """Draw `draws` item samples of size n, analyse both models as `cpbench run` does (default protocol, `splits`
    random splits), and count how often each interval holds the population value."""
    from cpbench.analysis.compare import RecordNumbers, compare_numbers
    from cpbench.conformal.protocols import analyze_artifact, preset

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
                from cpbench.analysis.stats import paired_bootstrap

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
    from cpbench.analysis.compare import RecordNumbers, compare_numbers
    from cpbench.conformal.protocols import analyze_artifact, preset
    from cpbench.gate import Decision, Limits, _cell_checks, _decide

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
