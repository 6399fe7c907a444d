"""Decoupling: deltas, paired intervals, categories with known answers, refusals to pair, rank agreement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from result_factory import make_record

from cpbench.results.analysis import DecouplingConfig, add_task_average, categorize, decoupling_table, rank_agreement

POINT = DecouplingConfig(decision="point")  # these records have no artifacts: the point-estimate mode
from cpbench.results.analysis.stats import kendall_tau_b, paired_bootstrap
from cpbench.results.store import load_results, write_result

R = 30


def _frame(tmp_path: Path, records: list[dict]) -> pd.DataFrame:
    for rec in records:
        write_result(rec, tmp_path)
    df, skipped = load_results(tmp_path)
    assert skipped == []
    return df


@pytest.mark.parametrize(
    ("d_acc", "d_ss", "expected"),
    [
        (0.0, 0.0, "unaffected"),
        (-0.005, 0.05, "unaffected"),
        (0.02, -0.3, "unaffected"),  # better on both
        (-0.005, 0.5, "hidden-risk"),
        (-0.10, 0.05, "accuracy-only"),
        (-0.10, 0.5, "coupled"),
        (-0.01, 0.10, "unaffected"),  # both exactly at the tolerance: still kept / holding
        (0.80 - 0.81, 2.1 - 2.0, "unaffected"),  # the same edges as float deltas (-0.010000000000000009, ...)
        (0.70 - 0.71, 0.0, "unaffected"),
        (-0.0101, 0.1001, "coupled"),  # just beyond both tolerances
        (float("nan"), 0.5, "unpaired"),
    ],
)
def test_categorize_table(d_acc: float, d_ss: float, expected: str) -> None:
    assert categorize(d_acc, d_ss, epsilon=0.01, delta=0.10) == expected


def test_every_category_from_records(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    common = 0.05 * rng.standard_normal(R)  # split-to-split noise shared by paired records
    base_acc, base_ss = 0.60 + common, 2.0 + common
    cells = {  # recipe -> (accuracy delta, set-size delta) chosen per category
        "keep": (0.0, 0.0),
        "hide": (-0.004, 0.40),
        "accd": (-0.08, 0.02),
        "both": (-0.08, 0.60),
    }
    recs = [make_record("m", "base", "qa", acc=base_acc, set_size=base_ss, splits=R)]
    for name, (da, ds) in cells.items():
        recs.append(make_record("m", name, "qa", acc=base_acc + da, set_size=base_ss + ds, splits=R))
    dec = decoupling_table(_frame(tmp_path, recs), DecouplingConfig(decision="point", epsilon=0.01, delta=0.10))
    lac = dec[dec["score"] == "lac"].set_index("recipe")
    assert lac.loc["keep", "category"] == "unaffected"
    assert lac.loc["hide", "category"] == "hidden-risk"
    assert lac.loc["accd", "category"] == "accuracy-only"
    assert lac.loc["both", "category"] == "coupled"
    for name, (da, ds) in cells.items():
        assert lac.loc[name, "d_acc"] == pytest.approx(da, abs=1e-12)
        assert lac.loc[name, "d_set_size"] == pytest.approx(ds, abs=1e-12)
        # the difference is the same on every split, so the paired interval collapses onto it
        assert lac.loc[name, "d_set_size_lo"] == pytest.approx(ds, abs=1e-12)
        assert lac.loc[name, "d_set_size_hi"] == pytest.approx(ds, abs=1e-12)
        assert lac.loc[name, "paired"]
    assert lac.loc["hide", "uacc"] < lac.loc["hide", "uacc_base"]


def test_epsilon_and_delta_are_configurable(tmp_path: Path) -> None:
    df = _frame(tmp_path, [
        make_record("m", "base", "qa", acc=0.60, set_size=2.0),
        make_record("m", "q", "qa", acc=0.58, set_size=2.3),
    ])

    def cat(cfg: DecouplingConfig) -> str:
        return decoupling_table(df, cfg).query("score == 'lac'")["category"].item()

    assert cat(DecouplingConfig(decision="point", epsilon=0.01, delta=0.1)) == "coupled"
    assert cat(DecouplingConfig(decision="point", epsilon=0.05, delta=0.1)) == "hidden-risk"
    assert cat(DecouplingConfig(decision="point", epsilon=0.01, delta=0.5)) == "accuracy-only"
    assert cat(DecouplingConfig(decision="point", epsilon=0.05, delta=0.5)) == "unaffected"
    assert "epsilon = 0.05" in DecouplingConfig(decision="point", epsilon=0.05).describe()
    assert "delta = 0.5" in DecouplingConfig(delta=0.5).describe()


def test_baseline_recipe_is_configurable(tmp_path: Path) -> None:
    df = _frame(tmp_path, [
        make_record("m", "bf16", "qa", set_size=2.0),
        make_record("m", "q", "qa", set_size=2.5),
    ])
    assert (decoupling_table(df, POINT)["category"] == "unpaired").all()  # no base here
    dec = decoupling_table(df, DecouplingConfig(decision="point", baseline="bf16"))
    assert set(dec["recipe"]) == {"q"} and (dec["category"] == "hidden-risk").all()


def test_paired_interval_is_narrower_than_the_split_spread(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    shared = 0.3 * rng.standard_normal(100)  # large split noise, common to both records
    own = 0.02 * rng.standard_normal(100)
    df = _frame(tmp_path, [
        make_record("m", "base", "qa", set_size=2.0 + shared, splits=100),
        make_record("m", "q", "qa", set_size=2.2 + shared + own, splits=100),
    ])
    row = decoupling_table(df, POINT).query("score == 'lac'").iloc[0]
    true = 0.2 + own.mean()
    assert row["d_set_size_lo"] <= true <= row["d_set_size_hi"]
    width = row["d_set_size_hi"] - row["d_set_size_lo"]
    assert width < 0.02  # unpaired, the 0.3 split noise would give ~2*1.96*0.3*sqrt(2/100) = 0.17
    assert width > 0.0


@settings(max_examples=30, deadline=None)
@given(shift=st.floats(-1, 1), seed=st.integers(0, 10_000))
def test_bootstrap_interval_contains_the_mean_difference(shift: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = rng.normal(2.0, 0.3, size=40)
    cand = base + shift + rng.normal(0, 0.05, size=40)
    mean, lo, hi = paired_bootstrap(cand, base, seed=seed)
    assert mean == pytest.approx(float((cand - base).mean()))
    assert lo <= mean <= hi


def test_refuses_to_pair_different_items_or_analysis(tmp_path: Path) -> None:
    df = _frame(tmp_path, [
        make_record("m", "base", "qa", n=1000),
        make_record("m", "fewer", "qa", n=800),
        make_record("m", "other", "qa", items_tag="another draw"),
        make_record("m", "base", "rc", analysis_seed=0),
        make_record("m", "seed1", "rc", analysis_seed=1),
        make_record("m", "orphan", "ci"),
    ])
    dec = decoupling_table(df, POINT).query("score == 'lac'").set_index(["recipe", "task"])
    assert (dec["category"] != "unpaired").sum() == 0
    assert "item sets differ (n 1000 in the baseline vs 800)" in dec.loc[("fewer", "qa"), "note"]
    assert "items_hash" in dec.loc[("other", "qa"), "note"]
    assert "analysis keys differ" in dec.loc[("seed1", "rc"), "note"] and "seed" in dec.loc[("seed1", "rc"), "note"]
    assert "no 'base' result" in dec.loc[("orphan", "ci"), "note"]
    assert dec["d_set_size"].isna().all()


def test_records_without_items_hash_or_per_split_are_compared_with_a_note(tmp_path: Path) -> None:
    df = _frame(tmp_path, [
        make_record("m", "base", "qa", set_size=2.0, with_items_hash=False),
        make_record("m", "q", "qa", set_size=2.4, with_items_hash=False),
        make_record("m", "base", "rc", set_size=2.0, with_per_split=False),
        make_record("m", "q", "rc", set_size=2.4, with_per_split=False),
    ])
    dec = decoupling_table(df, POINT).query("score == 'lac'").set_index("task")
    assert dec.loc["qa", "category"] == "hidden-risk" and dec.loc["qa", "paired"]
    assert "no items_hash" in dec.loc["qa", "note"]
    assert dec.loc["rc", "d_set_size"] == pytest.approx(0.4)
    assert np.isnan(dec.loc["rc", "d_set_size_lo"]) and not dec.loc["rc", "paired"]
    assert "no per-split values" in dec.loc["rc", "note"]


def test_task_average_pairs_split_by_split(tmp_path: Path) -> None:
    df = _frame(tmp_path, [
        make_record("m", "base", "qa", set_size=2.0), make_record("m", "base", "rc", set_size=3.0),
        make_record("m", "q", "qa", set_size=2.2), make_record("m", "q", "rc", set_size=3.6),
        make_record("m", "partial", "qa", set_size=2.2),  # no rc: no average row
    ])
    full = add_task_average(df)
    avg = full[(full["task"] == "avg") & (full["score"] == "lac")].set_index("recipe")
    assert set(avg.index) == {"base", "q"}
    assert avg.loc["q", "set_size"] == pytest.approx(2.9)
    dec = decoupling_table(full, POINT).query("score == 'lac' and task == 'avg'")
    assert dec["d_set_size"].item() == pytest.approx(0.4)
    assert dec["d_set_size_lo"].item() == pytest.approx(0.4)


def test_kendall_tau_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(200):
        x, y = rng.integers(0, 4, 7), rng.integers(0, 4, 7)
        ours, ref = kendall_tau_b(x, y), stats.kendalltau(x, y).statistic
        assert (np.isnan(ours) and np.isnan(ref)) or ours == pytest.approx(ref)


def test_rank_agreement_and_uacc_flips(tmp_path: Path) -> None:
    # accuracy order base > a > b > c; set size order base < a < b < c (agree: tau = +1)
    # UAcc = acc*sqrt(6)/ss: d has high accuracy but huge sets, so UAcc ranks it last while accuracy ranks it first
    recs = [
        make_record("m", "base", "qa", acc=0.60, set_size=2.0),
        make_record("m", "a", "qa", acc=0.55, set_size=2.2),
        make_record("m", "b", "qa", acc=0.50, set_size=2.4),
        make_record("m", "c", "qa", acc=0.45, set_size=2.6),
        make_record("m", "base", "rc", acc=0.60, set_size=2.0),
        make_record("m", "a", "rc", acc=0.55, set_size=1.9),
        make_record("m", "b", "rc", acc=0.50, set_size=1.8),
        make_record("m", "base", "ci", acc=0.50, set_size=2.0),
        make_record("m", "d", "ci", acc=0.55, set_size=4.0),
    ]
    rk = rank_agreement(_frame(tmp_path, recs)).query("score == 'lac'").set_index("task")
    assert rk.loc["qa", "tau_acc_size"] == pytest.approx(1.0)
    assert rk.loc["qa", "uacc_flips"] == 0
    assert rk.loc["qa", "acc_order"] == "base > a > b > c"
    assert rk.loc["rc", "tau_acc_size"] == pytest.approx(-1.0)
    assert rk.loc["ci", "uacc_flips"] == 1
    assert rk.loc["ci", "flips"] == "d>base"
