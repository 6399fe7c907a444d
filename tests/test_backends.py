"""The backend interface (cpbench.backends.base): a new backend is one file plus one registry line, and the runner
never asks which backend it has. The toy backend of docs/design.md runs end to end: artifact, record, gate."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from run_fixtures import cache, tiny_dir  # noqa: F401 - fixtures

from cpbench.backends import registry
from cpbench.base.errors import CpbenchError
from cpbench.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setitem(registry.BACKENDS, "toy", "toy_backend:ToyBackend")  # the one registry line
    yield
    sys.modules.pop("toy_backend", None)


def test_registry_names_every_backend_lazily_and_suggests():
    for name in registry.BACKENDS:
        assert registry.backend_class(name).name == name
    with pytest.raises(CpbenchError, match="did you mean 'vllm'"):
        registry.backend_class("vlm")


def test_runner_never_branches_on_a_backend_name():
    import re

    root = Path(__file__).resolve().parents[1] / "cpbench"
    for rel in ("run/runner.py", "run/cells.py", "sweep/worker.py"):
        text = (root / rel).read_text()
        assert not re.search(r"""scorer\s*[!=]=\s*["']""", text), rel


def test_toy_backend_end_to_end_artifact_record_check(toy, tmp_path, cache, tiny_dir, capsys):  # noqa: F811
    from cpbench.results.artifact import LogitsArtifact
    from cpbench.results.store import load_results

    results = tmp_path / "results"
    args = ["run", "--model", tiny_dir, "--quant", "magnitude-50", "--scorer", "toy", "--tasks", "qa",
            "--data", "samples", "--limit", "24", "--results", str(results)]  # fmt: skip
    assert main(args) == 0
    arts = {p.parent.parent.name: LogitsArtifact.load(p) for p in results.rglob("artifacts/*.parquet")}
    assert set(arts) == {"base", "magnitude-50"}
    base, pruned = arts["base"], arts["magnitude-50"]
    assert base.provenance["backend"] == "toy" and base.provenance["run_key"]["scorer"] == "toy"
    assert base.ids == pruned.ids and not np.allclose(base.logits, pruned.logits)
    # skill 2 on the gold option: clearly above the 1/6 of chance
    assert (base.logits.argmax(1) == base.labels).mean() > 0.4
    df, _ = load_results(results)
    assert set(df["recipe"]) == {"base", "magnitude-50"} and len(df) == 4  # LAC and APS records per recipe
    capsys.readouterr()
    model_dir = next(d for d in results.iterdir() if d.is_dir())
    code = main(["check", "--baseline", str(model_dir / "base"), "--candidate", str(model_dir / "magnitude-50")])
    assert code in (0, 1), capsys.readouterr().err  # a verdict, not a usage error
    assert "magnitude-50" in capsys.readouterr().out
    # a rerun reuses both artifacts: the toy's chunks and artifacts resume like any backend's
    assert main(args) == 0
    assert capsys.readouterr().out.count("artifact reused") == 2


def test_evaluate_accepts_a_backend_object(toy, tiny_dir):  # noqa: F811
    from toy_backend import ToyBackend

    import cpbench

    report = cpbench.evaluate(tiny_dir, recipes=["magnitude-50"], tasks=["qa"], data="samples", limit=24,
                              backend=ToyBackend(skill=3.0))  # fmt: skip
    assert report.verdict is not None
    assert {r["provenance"]["backend"] for r in report.records} == {"toy"}


def test_file_backend_reads_finished_outputs_paired_by_item(tmp_path, tiny_dir, cache):  # noqa: F811
    """lm-eval samples as a backend: the run pairs the file's items with the task's by id."""
    from cpbench.backends.files import LmEvalSamplesBackend

    missing = LmEvalSamplesBackend(tmp_path / "absent.jsonl")
    with pytest.raises(CpbenchError, match="is not a file"):
        missing.check("cpu", "letter")
    with pytest.raises(CpbenchError, match="nothing to compress"):
        from cpbench.run.plan import plan_from_options

        plan_from_options(model=tiny_dir, quant=["magnitude-50"], backend=missing, data="samples", tasks=["qa"])
