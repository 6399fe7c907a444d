"""Threshold detection on synthetic sweeps with known breakpoints, slopes and jumps, and on linear sweeps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from result_factory import make_record

from cpbench.results.analysis import fit_threshold, threshold_table
from cpbench.results.analysis.knobs import recipe_knob
from cpbench.results.store import load_results, write_result

BITS = np.array([16.0, 8.0, 6.0, 4.0, 3.0, 2.0])
SPARSITY = np.arange(0.0, 100.0, 10.0)


def hinge(t: np.ndarray, c: float, base: float, s1: float, s2: float) -> np.ndarray:
    """Set size with slope s1 up to compression level c and s2 after it (t grows with compression)."""
    return base + s1 * (t - t.min()) + (s2 - s1) * np.maximum(0.0, t - c)


@pytest.mark.parametrize("criterion", ["permutation", "bic"])
def test_noise_free_hinge_recovers_everything(criterion: str) -> None:
    y = hinge(SPARSITY, 60.0, 1.5, 0.002, 0.05)
    fit = fit_threshold(SPARSITY, y, "sparsity", criterion=criterion)
    assert fit.verdict == "threshold"
    assert fit.threshold == pytest.approx(60.0, abs=1e-6)
    assert fit.slope_before == pytest.approx(0.002, abs=1e-9)
    assert fit.slope_after == pytest.approx(0.05, abs=1e-9)
    assert fit.jump == pytest.approx((0.05 - 0.002) * (90 - 60), abs=1e-6)


@pytest.mark.parametrize("criterion", ["permutation", "bic"])
@pytest.mark.parametrize("true_c", [20.0, 30.0, 40.0, 50.0, 60.0, 70.0])
def test_sparsity_breakpoint_found_within_one_grid_step(criterion: str, true_c: float) -> None:
    rng = np.random.default_rng(int(true_c))
    y = hinge(SPARSITY, true_c, 1.5, 0.003, 0.06) + rng.normal(0, 0.04, SPARSITY.size)
    fit = fit_threshold(SPARSITY, y, "sparsity", criterion=criterion)
    assert fit.verdict == "threshold"
    assert abs(fit.threshold - true_c) <= 10.0
    assert fit.slope_after > fit.slope_before


@pytest.mark.parametrize("criterion", ["permutation", "bic"])
@pytest.mark.parametrize("true_bits", [8.0, 6.0, 4.0, 3.0])
def test_bits_breakpoint_found_within_one_grid_step(criterion: str, true_bits: float) -> None:
    rng = np.random.default_rng(int(true_bits))
    t = -BITS  # compression level: bits removed
    y = hinge(t, -true_bits, 1.6, 0.01, 0.5) + rng.normal(0, 0.03, BITS.size)
    fit = fit_threshold(BITS, y, "bits", criterion=criterion)
    assert fit.verdict == "threshold"
    i = int(np.flatnonzero(BITS == true_bits)[0])
    assert BITS[i + 1] <= fit.threshold <= BITS[i - 1]  # within one step of the grid on either side
    # slopes are per bit removed; before ~0.01, after ~0.5
    assert fit.slope_before == pytest.approx(0.01, abs=0.05)
    assert fit.slope_after == pytest.approx(0.5, abs=0.2)


@pytest.mark.parametrize("criterion", ["permutation", "bic"])
def test_linear_sweep_with_noise_is_gradual(criterion: str) -> None:
    rng = np.random.default_rng(7)
    y = 1.5 + 0.02 * SPARSITY + rng.normal(0, 0.05, SPARSITY.size)
    fit = fit_threshold(SPARSITY, y, "sparsity", criterion=criterion)
    assert fit.verdict == "gradual"
    assert np.isnan(fit.threshold) and fit.jump == 0.0
    assert fit.linear_slope == pytest.approx(0.02, abs=0.003)
    assert fit.slope_before == fit.slope_after == fit.linear_slope


def test_permutation_false_alarm_rate_on_linear_bit_sweeps() -> None:
    """The stated 5 % level: across many noisy linear sweeps, few are called thresholds."""
    rng = np.random.default_rng(11)
    alarms = 0
    for i in range(60):
        y = 1.5 + 0.1 * (16 - BITS) + rng.normal(0, 0.05, BITS.size)
        alarms += fit_threshold(BITS, y, "bits", seed=i).verdict == "threshold"
    assert alarms <= 6  # expected ~2-3 (5 % two-sided, and only accelerating breaks count)


def test_exact_permutation_p_value_on_six_levels() -> None:
    y = hinge(-BITS, -4.0, 1.6, 0.0, 0.4)
    fit = fit_threshold(BITS, y, "bits")
    assert fit.p_value * 720 == pytest.approx(round(fit.p_value * 720))  # all 6! permutations enumerated
    assert fit.p_value < 0.05


def test_saturation_is_not_a_threshold() -> None:
    y = np.minimum(1.0 + 0.1 * SPARSITY, 5.0)  # rises, then flat at 5 options: a slow-down
    fit = fit_threshold(SPARSITY, y, "sparsity")
    assert fit.verdict == "gradual" and "saturation" in fit.note


def test_too_few_levels() -> None:
    fit = fit_threshold(np.array([16.0, 8.0, 4.0, 2.0]), np.array([1.0, 1.1, 1.5, 3.0]), "bits")
    assert fit.verdict == "too-few-levels" and "4 distinct levels" in fit.note
    with pytest.raises(ValueError):
        fit_threshold(BITS, BITS, "bits", criterion="aic")  # type: ignore[arg-type]


def test_recipe_knobs_from_names_and_specs() -> None:
    assert recipe_knob("gptq-3bit").kind == "bits" and recipe_knob("gptq-3bit").value == 3
    assert recipe_knob("magnitude-70").value == 70 and recipe_knob("magnitude-70").kind == "sparsity"
    spec = {"name": "my-prune", "sweep": {"name": "mine", "knob": "sparsity", "level": 35}}
    knob = recipe_knob("my-prune", spec)
    assert (knob.kind, knob.value, knob.family) == ("sparsity", 35.0, "mine")
    assert recipe_knob("base") is None and recipe_knob("sparsegpt-2:4") is None and recipe_knob("w8a8") is None
    assert recipe_knob("foo-5bit").family == recipe_knob("foo-2bit").family


def test_threshold_table_from_records(tmp_path: Path) -> None:
    """A model's gptq sweep (with the base anchor at 16 bits) bends at 4 bits; another model's is linear."""
    rng = np.random.default_rng(5)
    for model, curve in (("bend", lambda b: 1.6 + 0.6 * max(0.0, 4 - b)), ("line", lambda b: 1.6 + 0.1 * (16 - b))):
        for b in BITS:
            recipe = "base" if b == 16 else f"gptq-{int(b)}bit"
            write_result(make_record(model, recipe, "qa", set_size=curve(b) + rng.normal(0, 0.02), seed=int(b)),
                         tmp_path)
    write_result(make_record("bend", "w8a8", "qa", set_size=5.9), tmp_path)  # not on a sweep: ignored
    df, _ = load_results(tmp_path)
    th = threshold_table(df).query("score == 'lac'").set_index("model")
    # the fit finds the bend (p < 5 %), but these records have no artifacts: no item-level check, no threshold claimed
    assert th.loc["bend", "verdict"] == "inconclusive" and th.loc["bend", "p_value"] < 0.05
    assert 3.0 <= th.loc["bend", "breakpoint_fit"] <= 6.0 and "artifact not found" in th.loc["bend", "note"]
    assert th.loc["bend", "levels"] == "2 3 4 6 8 16"
    # these records carry no knob or sweep spec: the family comes from the recipe name, flagged as such
    assert th.loc["bend", "family"] == "gptq-{bits}bit" and th.loc["bend", "knob_source"] == "name"
    assert th.loc["line", "verdict"] == "gradual"


def test_sweep_mixing_recipe_variants_is_split(tmp_path: Path) -> None:
    """rtn-4bit-g64 is on the rtn-bits sweep at 4 bits, but with group size 64: a different curve, not a duplicate."""
    spec = {"kind": "llmcompressor", "quantize": "rtn", "group_size": 128}
    for b in (8, 6, 4, 3, 2):
        rec = make_record("m", f"rtn-{b}bit", "qa", set_size=1.6 + 0.6 * max(0, 4 - b), recipe_spec={
            **spec, "name": f"rtn-{b}bit", "bits": b, "sweep": {"name": "rtn-bits", "knob": "bits", "level": b}})
        write_result(rec, tmp_path)
    write_result(make_record("m", "rtn-4bit-g64", "qa", set_size=1.6, recipe_spec={
        **spec, "group_size": 64, "name": "rtn-4bit-g64", "bits": 4,
        "sweep": {"name": "rtn-bits", "knob": "bits", "level": 4}}), tmp_path)
    write_result(make_record("m", "base", "qa", set_size=1.6), tmp_path)
    df, _ = load_results(tmp_path)
    th = threshold_table(df).query("score == 'lac'").set_index("family")
    assert sorted(th.index) == ["rtn-bits [group_size=128]", "rtn-bits [group_size=64]"]
    assert th.loc["rtn-bits [group_size=128]", "levels"] == "2 3 4 6 8 16"
    # the fit finds the bend; with no artifacts behind these records the item-level check cannot confirm it
    row = th.loc["rtn-bits [group_size=128]"]
    assert row["verdict"] == "inconclusive" and row["p_value"] < 0.05 and "artifact not found" in row["note"]
    assert th.loc["rtn-bits [group_size=64]", "verdict"] == "too-few-levels"


def test_threshold_needs_a_jump_beyond_item_noise(tmp_path: Path) -> None:
    """Real artifacts of one bit sweep: with 1,500 items, set size flat down to 4 bits then a large jump (signal
    loss): distinguishable from item noise, reported with a breakpoint interval. A mild bend on 150 items is not."""
    from paired_factory import population, write_cell

    from cpbench.results.analysis import simulate as S
    from cpbench.results.analysis.compare import ArtifactIndex

    labels, base = population()
    strong = {16: 0.0, 8: 0.0, 6: 0.02, 5: 0.04, 4: 0.06, 3: 0.6, 2: 1.2}
    weak = {16: 0.0, 8: 0.0, 6: 0.02, 5: 0.04, 4: 0.06, 3: 0.1, 2: 0.14}
    for n, model, loss in ((1500, "big", strong), (150, "small", weak)):
        idx = np.random.default_rng([n]).integers(0, len(labels), n)
        for bits, lam in loss.items():
            logits = base if bits == 16 else S.perturb(base, 0.1 if loss is strong else 0.4, signal_loss=lam, labels=labels, seed=bits)
            write_cell(tmp_path, model, "base" if bits == 16 else f"gptq-{bits}bit", "qa", labels[idx], logits[idx],
                       provenance={"knob": {"bits": float(bits)}} if bits != 16 else None)
    df, _ = load_results(tmp_path)
    th = threshold_table(df, artifacts=ArtifactIndex(tmp_path), n_boot=200).set_index("model")
    big, small = th.loc["big"], th.loc["small"]
    assert big["knob_source"] == "record"
    assert big["verdict"] == "threshold" and big["item_check"] == "distinguishable from item noise"
    assert big["threshold_lo"] <= big["threshold"] <= big["threshold_hi"] and 2.5 <= big["threshold"] <= 5
    assert big["slope_change_lo"] > 0 and big["jump_lo"] > 0
    assert small["verdict"] != "threshold", small[["p_value", "slope_change_lo", "item_check"]].to_dict()


def test_item_noise_decides_whether_a_fitted_bend_is_reported() -> None:
    """The same clean bend: with small item-level deviations the slope change is shown positive, with large ones it
    is not (then the table reports `gradual`)."""
    import pandas as pd

    from cpbench.results.analysis.thresholds import _item_fields

    levels = np.array([16.0, 8, 6, 4, 3, 2])
    y = 1.6 + 0.4 * np.maximum(0.0, 4 - levels)
    fit = fit_threshold(levels, y, "bits")
    assert fit.verdict == "threshold"
    g = pd.DataFrame({"kind": "bits", "level": levels, "set_size": y})
    rng = np.random.default_rng(0)
    calm = _item_fields(fit, g, rng.normal(0, 0.01, (6, 300)), "", 0.95)
    noisy = _item_fields(fit, g, rng.normal(0, 1.0, (6, 300)), "", 0.95)
    assert calm["item_check"] == "distinguishable from item noise" and calm["slope_change_lo"] > 0
    assert calm["threshold_lo"] <= 4.0 <= calm["threshold_hi"]
    assert noisy["item_check"] == "not distinguishable from item noise" and noisy["slope_change_lo"] < 0


@pytest.mark.slow
def test_published_thresholds_keep_every_estimate_inside_its_interval() -> None:
    """On the committed study (real artifacts): a row's breakpoint and jump intervals are printed only beside a
    reported threshold, and then contain their estimates (a straight-line fit's jump of 0 never stands beside the
    hinge refits' interval)."""
    from cpbench.results.analysis.compare import ArtifactIndex

    root = Path(__file__).resolve().parents[1] / "results"
    if not any(root.rglob("artifacts/*.parquet")):
        pytest.skip("no committed results")
    df, _ = load_results(root)
    th = threshold_table(df, artifacts=ArtifactIndex(root), n_boot=100)
    assert len(th)
    for _, r in th.iterrows():
        if r["verdict"] != "threshold":
            assert np.isnan(r["jump_lo"]) and np.isnan(r["threshold_lo"]), r.to_dict()
        else:
            assert r["threshold_lo"] <= r["threshold"] <= r["threshold_hi"]
            assert r["jump_lo"] <= r["jump"] <= r["jump_hi"]
