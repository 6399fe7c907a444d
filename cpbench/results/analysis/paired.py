"""Item-level paired estimates between two artifacts of the same items (numpy only): `estimates` turns the paired
bootstrap's draws (`cpbench.results.analysis.bootstrap`) into `Estimate`s (`cpbench.results.analysis.estimate`), with
the small-sample corrections of their standard errors (floors, t factors).

What the interval covers (docs/conformal.md): the items are a sample from a population, and a record's number is the
mean over S random calibration/test splits of that sample. For a smooth functional of the item distribution (accuracy,
Brier, NLL, ECE, mean set size with the calibration quantile, UAcc), the mean over many random splits is, to first
order, the full-sample plug-in estimator: every item is in calibration with probability r and in test with 1 - r, so
its influence is its test contribution plus its effect on the quantile. Hence

    Var(record delta) ~= Var_items(plug-in delta) + Var_split(per-split delta) / S

The first term is estimated by the paired item bootstrap of `bootstrap` (calibration re-run inside every replicate).
The second term comes from the records' stored per-split paired differences. The interval is normal with the total
standard error.

The modules, lowest first: `item_views` (one artifact's items, cached), `bootstrap` (paired replicates, `Draws`),
`estimate` (`Estimate`, Wilson), this one (`estimates`).
"""

from __future__ import annotations

import math

import numpy as np

from cpbench.results.analysis.bootstrap import SCORE_METRICS, Draws
from cpbench.results.analysis.estimate import LEVEL, Estimate, Method, z_of

PROPORTIONS = frozenset({"flip_cw", "flip_wc", "agreement", "churn", "newly_wrong"})


def _sd(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else math.nan


def split_se(cand_ps: np.ndarray | None, base_ps: np.ndarray | None) -> tuple[float, float, float]:
    """(se of the mean of S paired per-split differences, split 2.5%, 97.5% percentiles of the mean difference)."""
    if cand_ps is None or base_ps is None or len(cand_ps) != len(base_ps) or len(cand_ps) < 2:
        return math.nan, math.nan, math.nan
    d = np.asarray(cand_ps, dtype=float) - np.asarray(base_ps, dtype=float)
    lo, hi = np.percentile(d, [2.5, 97.5])
    return _sd(d) / math.sqrt(len(d)), float(lo), float(hi)


def _paired_proportion_se(draws: Draws) -> float:
    """Floor for the standard error of an accuracy difference: Agresti & Min's (2005) adjusted Wald for paired
    proportions (0.5 added to every cell of the 2x2 correct/wrong table). Without it, two models that agree on every
    sampled item get a bootstrap interval of exactly [0, 0], and 27 items would "show" accuracy equivalence within
    0.01; with many discordant items the floor is below the bootstrap's own spread and changes nothing."""
    if "flip_cw" not in draws.pair or "flip_wc" not in draws.pair or draws.n < 1:
        return 0.0
    n = float(draws.n)
    b, c = float(draws.pair["flip_cw"][0]) * n, float(draws.pair["flip_wc"][0]) * n
    p10, p01 = (b + 0.5) / (n + 2), (c + 0.5) / (n + 2)
    return math.sqrt(max(p10 + p01 - (p10 - p01) ** 2, 0.0) / (n + 2))


FLOOR_Z = 1.959963984540054  # z_0.975: the floor's pseudo-count, z^2 (a zero count's Wilson upper end, z^2 / n)
_RANGES = {"acc": (-1.0, 1.0), "coverage": (-1.0, 1.0), "ece": (-1.0, 1.0), "brier": (-2.0, 2.0),
           "idk_rate": (-1.0, 1.0), "nota_rate": (-1.0, 1.0), "jaccard": (0.0, 1.0), "kl": (0.0, math.inf)}


def t_quantile(p: float, df: float) -> float:
    """Student t quantile (numpy only): exact for 1 and 2 degrees of freedom, else the Cornish-Fisher expansion
    (Abramowitz & Stegun 26.7.5; error < 1e-3 at df >= 3)."""
    if not math.isfinite(df) or df > 1e6:
        return z_of(p)
    if df <= 1:
        return math.tan(math.pi * (p - 0.5))
    if df <= 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = z_of(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def t_factor(df: float, level: float = LEVEL) -> float:
    """t_{df} / z at the two-sided `level`: the scale that studentises a normal interval by a variance estimated with
    `df` degrees of freedom."""
    p = 0.5 + level / 2
    return t_quantile(p, df) / z_of(p)


def crossing_df(c: float) -> float:
    """Degrees of freedom of a set-size difference's item-level variance when it rests on c items that cross the
    split quantiles (`bootstrap.quantile_crossing`): the variance is about a count of c times a fixed square (one
    item's move of the quantile), a Poisson-like count whose estimate has relative variance 1 / c; a chi-square
    variance estimate with nu df has 2 / nu, so nu = 2c (Satterthwaite's moment match; at least 2)."""
    return max(2.0 * float(c), 2.0)


def tail_factor(m: int, level: float = LEVEL) -> float:
    """Small-sample scale for a set-based metric's item-level se: t_{m-1} / z at the interval's level, m the number
    of sample items beyond the conformal quantile (Draws.tail). The quantile, and with it every set size and coverage
    of the split procedure, rests on those m items; a variance estimated from m effective observations is
    studentised with m - 1 degrees of freedom (at least 2). 1.15 at n = 100 (m ~ 10), 1.04 at 300, 1.01 at 1,000."""
    return t_factor(max(float(m) - 1.0, 2.0), level)


CROSSING_PSEUDO = 0.5  # Jeffreys' half count: a zero count's posterior mean under the Jeffreys prior is 1/2


def crossing_floor(draws: Draws, score: str) -> float:
    """Floor of a set-size difference's item-level se: half a crossing item, sqrt(1/2) x one crossing's move
    (`Draws.move`). The quantile part of a set-size difference is a Poisson-like sum over the items that lie on
    different sides of the two models' split quantiles, each moving it by one rank's move of the mean set size
    (`bootstrap.quantile_move`), so its variance is about C moves squared (the model `crossing_df` studentises by; on
    real pairs the bootstrap se is about sqrt(C) moves). A sample that holds no crossing item although the population
    has some (a candidate that ranks nearly every item as the baseline does, whose rare crossing items, e.g. a gold
    option overtaking a near-tied one, carry the whole quantile part) shows a bootstrap se near 0; the floor is the
    variance of the zero count's Jeffreys half count (as the other zero-count floors: no sample can claim less than
    that). It is a fixed number of moves, so it shrinks like 1 / n, faster than the se (1 / sqrt(n)): it binds only
    where the sample shows (almost) no crossing item."""
    if score not in draws.move or draws.n < 1:
        return 0.0
    return math.sqrt(CROSSING_PSEUDO) * draws.move[score]


def _floor(draws: Draws, key: str) -> tuple[float, int]:
    """(floor of the item-level se, number of items whose own value differs) for a set-based metric.

    With d_i each item's own difference at the full-sample quantiles (options of the set; 1 - Jaccard), the floor is
    sqrt(sum d_i^2 + z^2) / n: the second moment with a pseudo-count of z^2 (z = 1.96) in the way Wilson's interval
    adds z^2 / 2 successes and failures. With no differing item it is z / n (an interval of +-z^2 / n, a zero count's
    Wilson upper end); with many it is the fixed-quantile per-item spread, below the bootstrap's in practice. It
    replaces the bootstrap spread only when it is larger: when few items' sets differ, a bootstrap of a rare count
    is too narrow (or exactly [0, 0]) in the samples where the count came out low."""
    if key not in draws.floor or draws.n < 1:
        return 0.0, -1
    ss, m = draws.floor[key]
    return math.sqrt(ss + FLOOR_Z**2) / draws.n, m


def estimates(draws: Draws, *, level: float = LEVEL, record_points: dict[str, float] | None = None,
              split_ses: dict[str, float] | None = None, k_options: int | None = None) -> dict[str, Estimate]:
    """Estimates of every delta (candidate - baseline: `d_<metric>` / `d_<score>.<metric>`), pair metric, and the
    candidate's own coverage (`cand.<score>.coverage`, what `--min-coverage` limits).

    `record_points` replaces the plug-in point by the record's split-averaged value (then `split_ses` must give the
    split Monte Carlo standard error of that mean, else the point is the plug-in and has no split term); keys as the
    estimates' names.

    Coverage has an item-level term like set size: a split's coverage is k / (n_cal + 1) in expectation only for
    untied scores whose set is {j : s(x, j) <= q-hat}; APS and RAPS include the option that crosses q-hat, and tied
    scores put mass at q-hat, so a model's coverage exceeds k / (n_cal + 1) by a model-dependent, item-dependent
    amount. It is bootstrapped the way set size is (q-hat smoothed over split positions inside every replicate)."""
    record_points = record_points or {}
    split_ses = split_ses or {}
    corr = math.sqrt(draws.n / max(draws.n - 1, 1))  # bootstrap variance is (n-1)/n of the unbiased one
    K = int(k_options) if k_options else None
    out: dict[str, Estimate] = {}

    def finish(key: str, plug: float, se_item: float, note: str, lo_hi: tuple[float, float],
               reps: np.ndarray | None = None) -> None:
        point, se_split = plug, 0.0
        if key in record_points and math.isfinite(record_points[key]):
            ss = split_ses.get(key, math.nan)
            if math.isfinite(ss):
                point, se_split, note = float(record_points[key]), ss, note.replace(
                    "plug-in (full-sample quantile)", "record mean over splits")
        se = math.sqrt(se_item**2 + se_split**2)
        out[key] = Estimate(key, point, se, se_item, se_split, draws.n, "normal", level, note, lo_limit=lo_hi[0],
                            hi_limit=lo_hi[1], reps=reps)

    floors: dict[str, float] = {}
    for name in draws.base:
        d = draws.cand[name] - draws.base[name]
        se_item = _sd(d[1:]) * corr
        key = f"d_{name}"
        short = name.split(".")[-1]
        notes = ["plug-in (full-sample quantile)"]
        if name == "acc":
            se_item = max(se_item, _paired_proportion_se(draws))
        sname = name.split(".")[0]
        tf = tail_factor(draws.tail[sname], level) if short in SCORE_METRICS and sname in draws.tail else 1.0
        why = f"{max(draws.tail.get(sname, 0) - 1, 2)} df: items beyond the quantile"
        if short == "set_size" and sname in draws.crossing and sname in draws.tail:
            df = crossing_df(draws.crossing[sname])
            if df < max(draws.tail[sname] - 1.0, 2.0):
                tf = t_factor(df, level)
                why = (f"{df:.1f} df: twice the {draws.crossing[sname]:.1f} items on different sides of the two "
                       "split quantiles")
        tf_own, why_own = tf, why  # the candidate's own coverage keeps the tail factor (Wilson's variance function)
        if short == "coverage" and draws.unpinned.get(sname) and name in draws.floor and sname in draws.tail:
            # APS / RAPS coverage is not pinned by re-calibration: near coverage 1 a difference rests on the few
            # items whose coverage differs between the two models (m, a rare, Poisson-like count: a Gemma pair's base
            # covers every item, its Wanda candidate misses ~1 % of items, i.e. m ~ 1 at n = 100 and m = 0 in 43 % of
            # samples). A bootstrap variance from m such items is studentised with 2m df (`crossing_df`), and a sample
            # that holds none shows only the split smoothing's spread (se ~0.002 there): floored, before the
            # studentisation, at half an item (Jeffreys' half count), as the crossing floor of set size
            # (docs/conformal.md, "APS Δcoverage when few items' coverage differs")
            m_diff = int(draws.floor[name][1])
            df = crossing_df(m_diff)
            if df < max(draws.tail[sname] - 1.0, 2.0):
                tf = t_factor(df, level)
                why = f"{df:.0f} df: twice the {m_diff} items whose coverage differs between the two models"
            half = math.sqrt(CROSSING_PSEUDO) / draws.n
            if half > se_item:
                se_item = half
                notes.append(f"se at its discordance floor sqrt(1/2) / n (half an item whose coverage differs; the "
                             f"sample shows {m_diff})")
        cross = crossing_floor(draws, sname) if short == "set_size" else 0.0
        if cross > se_item:
            # a variance estimate like the bootstrap's (a count of crossing items, half of one): studentised alike
            se_item = cross
            notes.append(f"se at its crossing floor sqrt(1/2) x {draws.move[sname]:.3g} options (half an item on "
                         f"different sides of the two split quantiles; the sample shows {draws.crossing[sname]:.1f})")
        if tf > 1.0:
            se_item *= tf
            notes.append(f"se x {tf:.3f} (t, {why})")
        if short in ("set_size", "coverage"):
            fl, m = _floor(draws, name)
            if short == "coverage":
                # no floor from the items' own differences: re-calibration pins each model's coverage near
                # k / (n_cal + 1), so items whose coverage differs at a fixed quantile say little about the spread
                # (their count would be far too wide a floor); measured calibration in docs/conformal.md (APS / RAPS,
                # whose coverage is not pinned: the half-item floor and the 2m-df studentisation above). Only when
                # no replicate moved by half an item (e.g. both models' APS sets hold every option on every sampled
                # item; the split smoothing still moves them by ~1e-9) the
                # zero-count floor z / n: [0, 0] would claim more than n items can show (the population value is
                # then a hair below 0 or above it, -8e-8 on a real pair, and [0, 0] missed it in 30 % of samples)
                moved = float(np.max(np.abs(d[1:] - d[0]))) if len(d) > 1 else 0.0
                fl = FLOOR_Z / draws.n if moved < 0.5 / draws.n else 0.0  # no replicate moved by half an item
                m = 0
            floors[name] = max(fl, cross * tf)  # (ΔUAcc's delta-method floor)
            if fl > se_item:
                se_item = fl
                notes.append(f"se at its floor: {m} of {draws.n} items' sets differ" if short == "set_size" and m >= 0
                             else "se at its zero-count floor z / n: no replicate moved by half an item" if short == "coverage"
                             else "se floored")
        if short == "uacc" and K:
            s_name = name[: -len("uacc")] + "set_size"
            acc_b, size_b = float(draws.base["acc"][0]), float(draws.base[s_name][0])
            if size_b > 0 and s_name in floors:
                g_acc, g_size = math.sqrt(K) / size_b, acc_b * math.sqrt(K) / size_b**2
                fl = math.hypot(g_acc * _paired_proportion_se(draws), g_size * floors[s_name])
                if fl > se_item:
                    se_item = fl
                    notes.append("se at its floor (from the accuracy and set-size floors)")
        lim = _RANGES.get(short, (-math.inf, math.inf))
        if short == "set_size" and K:
            lim = (-float(K), float(K))
        finish(key, float(d[0]), se_item, "; ".join(notes), lim, d[1:])
        if short == "coverage":
            c = draws.cand[name]
            own_notes = notes[:1] + ([f"se x {tf_own:.3f} (t, {why_own})"] if tf_own > 1.0 else [])
            finish(f"cand.{name}", float(c[0]), _sd(c[1:]) * corr * tf_own, "; ".join(own_notes), (0.0, 1.0))
            # a coverage near 1 is a proportion: Wilson's score interval at the effective sample size p(1-p)/se^2
            # (not capped at n: calibration makes coverage less variable than n independent trials). A normal
            # interval undercovers there because the samples with the highest coverage have the smallest spread.
            # Each end is also at least the normal interval's: the estimate's variance falls toward 1 more slowly
            # than Wilson's p(1 - p) (`Estimate.wald_hull`).
            out[f"cand.{name}"] = out[f"cand.{name}"].replace(method="wilson", cap_n_eff=False, wald_hull=True)
    for name, d_i in draws.item_d.items():  # set size: a score-type test and interval (Estimate._tilted_sd)
        if f"d_{name}" in out and len(d_i[0]):
            out[f"d_{name}"] = out[f"d_{name}"].replace(method="tilted", item_d=d_i)
    if "d_acc" in out and "flip_cw" in draws.pair and "flip_wc" in draws.pair:
        # a difference of paired proportions: Tango's score test and interval (the variance under the null), which
        # keeps its level on the side where a Wald interval (the bootstrap's) does not: samples with few discordant
        # items show a small spread exactly when their estimate is furthest from the truth
        out["d_acc"] = out["d_acc"].replace(method="paired", discordant=(
            float(draws.pair["flip_wc"][0]), float(draws.pair["flip_cw"][0])))
    for name, v in draws.pair.items():
        se_item = _sd(v[1:]) * corr
        short = name.split(".")[-1]
        # KL >= 0 is a mean of a skewed positive quantity: its interval on the log scale (delta method)
        # a share of all items (flips, agreement) is a count: the exact binomial (`binomial`); a set-based share
        # (churn, newly confidently wrong) rests on the quantile too, and its se on the bootstrap: Wilson at n_eff
        method: Method = ("wilson" if "." in name else "binomial") if short in PROPORTIONS else (
            "lognormal" if short == "kl" else "normal")
        note = "plug-in (full-sample quantile)" if "." in name else "all items"
        if short == "jaccard":
            fl, m = _floor(draws, name)
            if fl > se_item:
                se_item = fl
                note += f"; se at its floor: {m} of {draws.n} items' sets differ"
        # churn, newly confidently wrong: a jump at q-hat's atoms. Jaccard: its spread is mostly the quantile's
        # position, not the items' own differences (real pair, APS, n = 300: sd of the estimate 0.0148, of the part at
        # fixed quantiles 0.0031), and the mean Jaccard is a monotone, saturating function of that position (the sets
        # stop growing as they fill up): the estimate is skewed toward 0 and its bootstrap se is smallest where q-hat
        # came out high and the estimate furthest above the truth, so a symmetric normal interval missed above (90 %
        # covered). The percentile interval follows a monotone transform of the quantile's position (q-hat is
        # recomputed in every replicate); each end is the farther of it and the normal one with its floor
        # (docs/conformal.md, "Set Jaccard: the interval follows the skew of the quantile's position").
        hull = method == "wilson" or short == "jaccard"
        if hull:
            note += "; interval also holds the bootstrap percentile interval (q-hat per replicate)"
        lim = _RANGES.get(short, (0.0, 1.0) if method in ("wilson", "binomial") else (-math.inf, math.inf))
        out[name] = Estimate(name, float(v[0]), se_item, se_item, 0.0, draws.n, method, level, note,
                             lo_limit=lim[0], hi_limit=lim[1], reps=v[1:] if hull else None, boot_hull=hull)
    return out
