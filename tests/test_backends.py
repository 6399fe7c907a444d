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


def test_file_backend_end_to_end_pairs_a_pickle_with_the_task_items(tmp_path, tiny_dir, cache):  # noqa: F811
    """Someone's finished option logits (an LLM-Uncertainty-Bench pickle) scored as a backend: rows are found by the
    task items' ids, the record is the same analysis a cpbench-scored artifact gets."""
    import json
    import pickle

    import cpbench
    from cpbench.backends.files import Ye2024PicklesBackend
    from cpbench.specs.tasks import build_prompts, load_items, load_task

    prompts = build_prompts(load_task("qa"), load_items(load_task("qa"), "samples"))
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(len(prompts), 6)).astype(np.float32)
    logits[np.arange(len(prompts)), [int(p.label) for p in prompts]] += 1.5
    order = rng.permutation(len(prompts))  # the file's order is not the task's: pairing is by id
    rows = [{"id": prompts[i].item_id, "logits_options": logits[i]} for i in order]
    data = [{"id": prompts[i].item_id, "answer": "ABCDEF"[int(prompts[i].label)]} for i in order]
    pkl, js = tmp_path / "m_qa.pkl", tmp_path / "qa.json"
    pkl.write_bytes(pickle.dumps(rows))
    js.write_text(json.dumps(data))

    from cpbench.results.artifact import LogitsArtifact

    results = tmp_path / "results"
    report = cpbench.evaluate(tiny_dir, tasks=["qa"], data="samples", limit=24, results=results,
                              backend=Ye2024PicklesBackend(pkl, js))  # fmt: skip
    assert report.records and {r["provenance"]["backend"] for r in report.records} == {"ye2024-pickles"}
    (path,) = results.rglob("artifacts/*.parquet")
    art = LogitsArtifact.load(path)
    assert art.ids == [p.item_id for p in prompts[:24]]  # the task's items, in the task's order
    np.testing.assert_array_equal(art.logits, logits[:24])  # each row found by its id in the shuffled file
    assert art.provenance["source_format"] == "llm-uncertainty-bench"
    assert art.provenance["run_key"]["scorer"] == "ye2024-pickles"

    other = [{"id": f"x{r['id']}", "logits_options": r["logits_options"]} for r in rows]
    pkl.write_bytes(pickle.dumps(other))
    js.write_text(json.dumps([{"id": f"x{d['id']}", "answer": d["answer"]} for d in data]))
    with pytest.raises(CpbenchError, match="paired by id"):
        cpbench.evaluate(tiny_dir, tasks=["qa"], data="samples", limit=24, backend=Ye2024PicklesBackend(pkl, js))
