"""lm-eval-style flags of `cpbench run` (issue 12): --dtype, --model-args, --revision, --seed/--splits/--scores,
per-task --data, calibration options; parsing errors are one line, values reach the run key and provenance."""

from __future__ import annotations

import json

import pytest

from cpbench.run import options as runopts
from cpbench.cli import main
from cpbench.base.errors import CpbenchError
from run_fixtures import cache, tiny_dir  # noqa: F401  (pytest fixtures)


def test_model_args_parse_like_lm_eval():
    assert runopts.parse_model_args("attn_implementation=eager,low_cpu_mem_usage=true,max_memory=none,x=2") == {
        "attn_implementation": "eager", "low_cpu_mem_usage": True, "max_memory": None, "x": 2}  # fmt: skip
    with pytest.raises(CpbenchError, match="not key=value"):
        runopts.parse_model_args("eager")
    with pytest.raises(CpbenchError, match="with --dtype"):
        runopts.parse_model_args("torch_dtype=bfloat16")


def test_task_data_and_dtype_parse():
    assert runopts.parse_task_data("samples") == ("samples", {})
    assert runopts.parse_task_data("drs=/x.json,qa=samples") == (None, {"drs": "/x.json", "qa": "samples"})
    assert runopts.parse_task_data("prepared,qa=samples") == ("prepared", {"qa": "samples"})
    with pytest.raises(CpbenchError, match="did you mean 'qa'"):
        runopts.parse_task_data("qaa=samples", ["qa", "rc"])
    assert runopts.parse_dtype("bf16") == "bfloat16" and runopts.parse_dtype(None) == "auto"
    with pytest.raises(CpbenchError, match="--dtype"):
        runopts.parse_dtype("int8")


def test_revision_is_for_hub_models_only(tiny_dir, capsys):
    assert main(["run", "--model", tiny_dir, "--revision", "v1", "--data", "samples", "--tasks", "qa"]) == 2
    assert "--revision applies to hub models" in capsys.readouterr().err


def test_bfloat16_run_with_flags_on_cpu(tmp_path, tiny_dir, capsys):
    """`--dtype bfloat16` scores on CPU in bf16, and the dtype, seed, splits, scores, model args and per-task data
    reach the run key, the record and the provenance."""
    from cpbench.results.artifact import LogitsArtifact

    results = tmp_path / "r"
    args = ["run", "--model", tiny_dir, "--tasks", "qa,rc", "--data", "samples,rc=samples", "--limit", "18",
            "--dtype", "bfloat16", "--seed", "3", "--splits", "20", "--scores", "lac,raps",
            "--model-args", "attn_implementation=eager", "--results", str(results)]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    arts = sorted(results.rglob("artifacts/*.parquet"))
    assert len(arts) == 2 and all("bfloat16" in p.name for p in arts)
    prov = LogitsArtifact.load(arts[0]).provenance
    assert prov["dtype"] == "bfloat16" and prov["run_key"]["dtype"] == "bfloat16"
    assert prov["model_args"] == {"attn_implementation": "eager"}
    records = [json.loads(p.read_text()) for p in results.rglob("*.json") if "run-" not in p.name]
    assert len(records) == 2
    for r in records:
        assert r["run_key"]["analysis"]["seed"] == 3 and r["run_key"]["analysis"]["splits"] == 20
        assert set(r["protocol"]["scores"]) == {"lac", "raps"}
        assert len(r["per_split"]["acc"]) == 20
    assert "+args-" in arts[0].parent.parent.parent.name  # model args name the results directory: runs never mix


def test_calibration_options_override_the_suite():
    from cpbench.run.plan import plan_from_options

    plan = plan_from_options(calibration_data="builtin", calibration_samples=8, calibration_seq_len=64)
    assert (plan.calibration.n, plan.calibration.seq_len, plan.calibration.source) == (8, 64, "builtin")
    with pytest.raises(CpbenchError, match="--calibration-samples"):
        plan_from_options(calibration_samples=0)
