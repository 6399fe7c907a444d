"""Size effect: delta set size against log10(parameters), slope and t interval with known answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from result_factory import make_record

from cpbench.results.analysis import DecouplingConfig, decoupling_table, size_effect_table
from cpbench.results.analysis.knobs import model_params, params_from_name
from cpbench.results.analysis.stats import fit_line, t_ppf
from cpbench.results.store import load_results, write_result

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


def test_parameter_counts_from_provenance_then_names_never_the_registry() -> None:
    assert params_from_name("llama-3.1-8b") == 8e9
    assert params_from_name("Qwen/Qwen2.5-0.5B") == 5e8
    assert params_from_name("smollm2-135m-gguf-q4_1") == 1.35e8
    assert math.isnan(params_from_name("phi-3.5-mini"))
    assert model_params("x", recorded=7e9) == (7e9, "record")
    # without a recorded count, the name is a flagged fallback: the YAML registry is never read (a registry edit must
    # not change an old leaderboard); `model_name` from the provenance is parsed first
    value, source = model_params("mystery-gguf-q4_1", registry_name="smollm2-135m")
    assert source == "name" and value == pytest.approx(1.35e8)
    assert model_params("not-a-registry-model-3b") == (3e9, "name")
    assert model_params("mystery") == (pytest.approx(math.nan, nan_ok=True), "unknown")


def test_item_level_slope_interval_from_the_deltas_standard_errors(tmp_path: Path) -> None:
    """Two models with artifacts: the item-level slope se is sqrt(sum c_m^2 se_m^2) of the decoupling table's se."""
    from paired_factory import write_pair

    from cpbench.results.analysis.compare import ArtifactIndex

    write_pair(tmp_path, 600, 0.9, model="tiny-1b", recipe="q", seed=1)
    write_pair(tmp_path, 600, 0.3, model="huge-100b", recipe="q", seed=2)
    df, _ = load_results(tmp_path)
    dec = decoupling_table(df, DecouplingConfig(), ArtifactIndex(tmp_path))
    row = size_effect_table(dec, df[["model", "params", "model_name"]]).iloc[0]
    se = dec.set_index("model")["d_set_size_se"]
    x = np.log10([1e9, 1e11])
    c = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    assert row["slope_item_se"] == pytest.approx(math.sqrt(c[0] ** 2 * se["tiny-1b"] ** 2 + c[1] ** 2
                                                           * se["huge-100b"] ** 2))
    assert row["slope_item_lo"] < row["slope"] < row["slope_item_hi"] and row["slope"] < 0
    assert math.isnan(row["slope_lo"])  # two models: no spread across models to estimate


def test_provenance_fields_written_at_scoring_and_read_back(tmp_path: Path) -> None:
    """The scorer's provenance carries n_params and the knob; the analysis reads them from the record, so a registry
    edit cannot change an old table."""
    from paired_factory import population, write_cell

    from cpbench.results.analysis.knobs import provenance_fields, recorded_knob

    assert provenance_fields(8.0, "gptq-4bit", {"bits": 4}) == {"n_params": 8e9, "knob": {"bits": 4.0}}
    assert provenance_fields(None, "magnitude-70", None) == {"knob": {"sparsity": 0.7}}
    assert provenance_fields(1.0, "base", None) == {"n_params": 1e9}
    labels, base = population()
    write_cell(tmp_path, "mystery", "custom-quant", "qa", labels[:200], base[:200], params=3e9,
               provenance={"knob": {"bits": 3.0}})
    df, _ = load_results(tmp_path)
    row = df.iloc[0]
    assert row["params"] == 3e9 and model_params("mystery", row["params"]) == (3e9, "record")
    knob, source = recorded_knob(row["knob"], "custom-quant", None)
    assert source == "record" and knob is not None and (knob.kind, knob.value) == ("bits", 3.0)


def test_item_level_slope_uses_replicates_shared_across_models_on_the_same_items(tmp_path: Path) -> None:
    """Models that answer the same items have correlated deltas: the slope's se comes from the joint bootstrap
    replicates (the same resamples for every model), not from independent standard errors. Three near-copies of one
    perturbation are almost perfectly correlated, so the slope's se is far below the independence formula's."""
    from paired_factory import population, write_cell

    from cpbench.results.analysis import simulate as S
    from cpbench.results.analysis.compare import ArtifactIndex

    labels, base = population()
    idx = np.random.default_rng(4).integers(0, len(labels), 500)
    noise = S.perturb(base, 0.6)[idx] - base[idx]
    for model, size, k in (("a-1b", 1e9, 1.0), ("b-10b", 1e10, 0.95), ("c-100b", 1e11, 0.9)):
        write_cell(tmp_path, model, "base", "qa", labels[idx], base[idx], params=size)
        write_cell(tmp_path, model, "q", "qa", labels[idx], base[idx] + k * noise, params=size)
    df, _ = load_results(tmp_path)
    dec = decoupling_table(df, DecouplingConfig(), ArtifactIndex(tmp_path))
    row = size_effect_table(dec, df[["model", "params", "model_name"]]).iloc[0]
    assert row["slope_item_basis"] == "shared replicates"
    x = np.log10([1e9, 1e10, 1e11])
    c = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    d = dec.set_index("model")
    reps = np.vstack([d.loc[m, "reps_d_set_size"]["reps"] for m in ("a-1b", "b-10b", "c-100b")])
    independent = math.sqrt(float((c**2 * d.loc[["a-1b", "b-10b", "c-100b"], "d_set_size_se"] ** 2).sum()))
    assert row["slope_item_se"] < 0.6 * independent
    # the replicate slope's own spread is what the se measures (up to floors and the split term)
    assert row["slope_item_se"] >= float(np.std(c @ reps, ddof=1)) * 0.9
