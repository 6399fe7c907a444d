"""`--log wandb|mlflow` (issue 12): the tracker code run against stand-in modules that record the calls (the real
packages are optional extras and not installed here), and notes for base weights that were already quantized."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from cpbench.run import trackers
from cpbench.base.errors import CpbenchError

SUMMARY = {
    "schema": "cpbench.run/1", "created_at": "2026-11-29T19:00:00Z", "model": "m", "baseline": "base",
    "plan": {"recipes": ["base", "rtn-4bit"], "tasks": ["qa"], "analysis": {"alpha": 0.1, "splits": 100}},
    "cells": [{"recipe": "base", "task": "qa", "prompt": "base", "acc": 0.5,
               "lac": {"coverage": 0.9, "set_size": 2.0, "uacc": 0.6, "set_size_split_range95": [1.9, 2.1]}},
              {"recipe": "rtn-4bit", "task": "qa", "prompt": "base", "acc": 0.4,
               "lac": {"coverage": 0.9, "set_size": 2.5, "uacc": 0.4, "set_size_split_range95": [2.4, 2.6]}}],
    "comparisons": [{"recipe": "rtn-4bit", "task": "qa", "prompt": "base", "score": "lac", "d_acc": -0.1,
                     "d_coverage": 0.0, "d_set_size": 0.5, "d_uacc": float("nan"), "category": "coupled"}],
}  # fmt: skip


def test_metrics_are_flat_and_finite():
    m = trackers.metrics(SUMMARY)
    assert m["rtn-4bit/qa/base/acc"] == 0.4 and m["base/qa/base/lac/set_size"] == 2.0
    assert m["rtn-4bit/qa/base/lac/d_set_size"] == 0.5
    assert "rtn-4bit/qa/base/lac/d_uacc" not in m and not any(k.endswith(("_ci95", "_split_range95")) for k in m)


def test_mlflow_logging_through_its_api(tmp_path, monkeypatch):
    calls: dict = {}

    class Run:
        info = types.SimpleNamespace(run_id="r1")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    fake = types.SimpleNamespace(
        start_run=lambda run_name: calls.setdefault("run", run_name) and Run(),
        log_params=lambda p: calls.__setitem__("params", p),
        log_metrics=lambda m: calls.__setitem__("metrics", m),
        set_tags=lambda t: calls.__setitem__("tags", t),
        log_artifact=lambda path: calls.__setitem__("artifact", path),
        get_tracking_uri=lambda: "file:///tmp/mlruns",
    )
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"x": 1}))
    (line,) = trackers.log_run(["mlflow"], SUMMARY, path)
    assert line == "logged to MLflow (file:///tmp/mlruns): run r1"
    assert calls["params"]["model"] == "m" and calls["params"]["analysis.alpha"] == "0.1"
    assert calls["metrics"]["rtn-4bit/qa/base/acc"] == 0.4
    assert calls["tags"] == {"rtn-4bit/qa/base/lac/category": "coupled"} and calls["artifact"] == str(path)


def test_tracker_names_are_checked():
    with pytest.raises(CpbenchError, match="use wandb or mlflow"):
        trackers.parse("tensorboard")
    assert trackers.parse("wandb,mlflow,wandb") == ["wandb", "mlflow"]


def test_notes_for_base_weights_that_were_already_quantized(tmp_path):
    from cpbench.weights import models

    gguf_copy = tmp_path / "converted"
    gguf_copy.mkdir()
    (gguf_copy / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (gguf_copy / "cpbench-source.json").write_text(json.dumps({"gguf_quant": "Q4_1", "file": "x.gguf"}))
    assert "baseline weights were GGUF Q4_1" in models.resolve(str(gguf_copy)).source_notes()[0]
    gptq = tmp_path / "gptq"
    gptq.mkdir()
    (gptq / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": {"quant_method": "gptq"}}))
    assert "already quantized (gptq)" in models.resolve(str(gptq)).source_notes()[0]
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert models.resolve(str(plain)).source_notes() == ()
