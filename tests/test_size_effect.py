"""Size effect: delta set size against log10(parameters), slope and t interval with known answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from result_factory import make_record

from cpbench.analysis import DecouplingConfig, decoupling_table, size_effect_table
from cpbench.analysis.knobs import model_params, params_from_name
from cpbench.analysis.stats import fit_line, t_ppf
from cpbench.store import load_results, write_result

SIZES = [1.35e8, 5e8, 1.5e9, 3e9, 8e9, 14e9, 32e9, 70e9]


def test_t_quantile_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 8, 30, 200):
        for p in (0.6, 0.9, 0.975, 0.995, 0.025):
            assert t_ppf(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-8, abs=1e-9)


def test_fit_line_matches_scipy_linregress() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.uniform(8, 11, 9)
    y = 0.3 - 0.15 * x + rng.normal(0, 0.05, 9)
    ours, ref = fit_line(x, y), stats.linregress(x, y)
    assert ours.slope == pytest.approx(ref.slope)
    assert ours.intercept == pytest.approx(ref.intercept)
    assert ours.slope_se == pytest.approx(ref.stderr)
    half = stats.t.ppf(0.975, 7) * ref.stderr
    assert (ours.slope_lo, ours.slope_hi) == pytest.approx((ref.slope - half, ref.slope + half))


def test_interval_covers_the_true_slope_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(1)
    x = np.log10(SIZES)
    hits = 0
    for _ in range(400):
        fit = fit_line(x, 0.5 - 0.2 * x + rng.normal(0, 0.1, x.size))
        hits += fit.slope_lo <= -0.2 <= fit.slope_hi
    assert 0.91 <= hits / 400 <= 0.98


def _tree(tmp_path: Path, slope: float, noise: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i, p in enumerate(SIZES):
        name = f"model{i}"
        d = 0.4 + slope * (math.log10(p) - 9) + rng.normal(0, noise)
        write_result(make_record(name, "base", "qa", set_size=2.0, params=p), tmp_path)
        write_result(make_record(name, "gptq-4bit", "qa", set_size=2.0 + d, params=p), tmp_path)


def test_size_effect_slope_recovered_within_its_interval(tmp_path: Path) -> None:
    _tree(tmp_path, slope=-0.25, noise=0.03)
    df, _ = load_results(tmp_path)
    se = size_effect_table(decoupling_table(df, DecouplingConfig(decision="point")), df[["model", "params", "model_name"]])
    row = se.query("score == 'lac' and recipe == 'gptq-4bit'").iloc[0]
    assert row["n_models"] == len(SIZES)
    assert row["slope_lo"] <= -0.25 <= row["slope_hi"]
    assert row["slope"] == pytest.approx(-0.25, abs=0.05)
    assert row["slope_hi"] < 0  # larger models absorb this compression better, and the data show it
    assert "record" in row["models"] and row["left_out"] == ""


def test_noise_free_slope_is_exact(tmp_path: Path) -> None:
    _tree(tmp_path, slope=0.1, noise=0.0)
    df, _ = load_results(tmp_path)
    row = size_effect_table(decoupling_table(df, DecouplingConfig(decision="point")), df[["model", "params", "model_name"]]).query(
        "score == 'lac'").iloc[0]
    assert row["slope"] == pytest.approx(0.1, abs=1e-9)
    assert row["r2"] == pytest.approx(1.0)


def test_unknown_sizes_are_left_out_and_named(tmp_path: Path) -> None:
    for name, delta in (("alpha-1b", 0.5), ("beta-8b", 0.3), ("gamma-70b", 0.1), ("mystery", 0.9)):
        write_result(make_record(name, "base", "qa", set_size=2.0), tmp_path)
        write_result(make_record(name, "q", "qa", set_size=2.0 + delta), tmp_path)
    df, _ = load_results(tmp_path)
    row = size_effect_table(decoupling_table(df, DecouplingConfig(decision="point")), df[["model", "params", "model_name"]]).query(
        "score == 'lac'").iloc[0]
    assert row["n_models"] == 3
    assert "mystery(size unknown)" in row["left_out"]
    assert "alpha-1b(1e+09,name)" in row["models"]
    assert row["slope"] < 0


def test_too_few_models_gives_no_interval(tmp_path: Path) -> None:
    for name in ("a-1b", "b-8b"):
        write_result(make_record(name, "base", "qa", set_size=2.0), tmp_path)
        write_result(make_record(name, "q", "qa", set_size=2.5), tmp_path)
    df, _ = load_results(tmp_path)
    row = size_effect_table(decoupling_table(df, DecouplingConfig(decision="point")), df[["model", "params", "model_name"]]).query(
        "score == 'lac'").iloc[0]
    assert row["n_models"] == 2 and row["slope"] == pytest.approx(0.0) and np.isnan(row["slope_lo"])


def test_parameter_counts_from_names_and_registry() -> None:
    assert params_from_name("llama-3.1-8b") == 8e9
    assert params_from_name("Qwen/Qwen2.5-0.5B") == 5e8
    assert params_from_name("smollm2-135m-gguf-q4_1") == 1.35e8
    assert math.isnan(params_from_name("phi-3.5-mini"))
    assert model_params("x", recorded=7e9) == (7e9, "record")
    # the registry (benchmark/models.yaml) lists SmolLM2-135M; the run key's model name carries a weight-source
    # suffix the registry does not know, so the lookup must go through the record's `model_name`
    value, source = model_params("smollm2-135m-gguf-q4_1", registry_name="smollm2-135m")
    assert source == "registry" and value == pytest.approx(1.35e8, rel=0.01)
    assert model_params("not-a-registry-model-3b") == (3e9, "name")
    assert model_params("mystery") == (pytest.approx(math.nan, nan_ok=True), "unknown")
