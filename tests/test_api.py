"""The Python API: `cpbench.evaluate` with in-memory models (nothing written, no process-wide state changed),
with a results directory (written as `cpbench run` writes, reused), and `cpbench.compare` on two artifacts."""

from __future__ import annotations

import subprocess
import sys

import pytest
from run_fixtures import cache, tiny_dir  # noqa: F401  (pytest fixtures)


@pytest.fixture(scope="module")
def pair(tiny_dir):
    """(base model, tokenizer) and the same model compressed in memory by llm-compressor (W4A16 RTN, group 128)."""
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    comp = AutoModelForCausalLM.from_pretrained(tiny_dir)
    oneshot(model=comp, recipe=[QuantizationModifier(targets="Linear", scheme="W4A16", ignore=["lm_head"])],
            pipeline="datafree")  # fmt: skip
    return (base, tok), (comp.eval(), tok)


def test_import_is_light_and_lazy():
    code = ("import sys, cpbench; assert 'torch' not in sys.modules and 'pandas' not in sys.modules; "
            "f = cpbench.evaluate; assert callable(f) and callable(cpbench.compare); "
            "assert 'torch' not in sys.modules; "
            "import pytest\n"
            "try:\n    cpbench.nothing\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit(1)")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_evaluate_in_memory_writes_nothing_and_keeps_process_state(pair, tmp_path):
    import matplotlib
    import torch

    import cpbench

    torch.set_num_threads(3)  # the caller's choice: a library call must not change it
    backend = matplotlib.get_backend()
    before = {p for p in tmp_path.rglob("*") if "cache" not in p.parts}
    report = cpbench.evaluate(base=pair[0], candidates={"w4a16": pair[1]}, tasks=["qa"], data="samples")
    assert torch.get_num_threads() == 3 and matplotlib.get_backend() == backend
    assert {p for p in tmp_path.rglob("*") if "cache" not in p.parts} == before  # no results, no artifacts
    assert report.results_dir is None and len(report.records) == 2
    frame = report.to_frame()
    assert set(frame["recipe"]) == {"base", "w4a16"} and frame["items_hash"].nunique() == 1
    comp = report.comparison.to_frame()
    assert set(comp["recipe"]) == {"w4a16"} and set(comp["score"]) == {"lac", "aps"}
    assert not comp["category"].eq("unpaired").any()
    v = report.verdict
    assert v.passed in (True, False) and v.exit_code == (0 if v.passed else 1)
    rows = v.to_frame()
    assert set(rows["status"]) <= {"pass", "fail", "inconclusive"} and len(rows) == 2  # 27 sample items: may not tell
    assert rows["d_set_size_lo"].notna().all()  # item-level intervals: the in-memory artifacts were used
    assert not comp["note"].str.contains("artifact not found").any()
    assert "cpbench check" in v.markdown() and "<testsuite" in v.junit()
    prov = report.records[1]["provenance"]
    assert prov["weights"]["source"] == "memory" and prov["weights"]["kind"] == "candidate"
    assert prov["model_hash"] != report.records[0]["provenance"]["model_hash"]  # really other weights


@pytest.mark.slow
def test_evaluate_with_results_dir_then_compare(pair, tiny_dir, tmp_path):
    import cpbench

    res = tmp_path / "res"
    report = cpbench.evaluate(base=tiny_dir, candidates={"w4a16": pair[1]}, tasks=["qa"], data="samples",
                              results=res, limits={"max_set_size_increase": 5.0, "max_accuracy_drop": None,
                                                   "max_flip_rate": None})  # fmt: skip
    assert report.verdict.passed  # a set-size increase of 5 options cannot happen with 6 options and ~6-wide sets
    arts = sorted(res.rglob("*.parquet"))
    assert len(arts) == 2 and len(list(res.rglob("*.json"))) == 2
    base_art = next(a for a in arts if "/base/" in a.as_posix())
    cand_art = next(a for a in arts if "/w4a16/" in a.as_posix())
    cmp = cpbench.compare(base_art, cand_art)
    assert set(cmp.to_frame()["recipe"]) == {"base", "w4a16"}
    # the same numbers as evaluate's: compare re-analyses the same artifacts under the same analysis key
    a = report.comparison.to_frame().set_index("score")
    b = cmp.comparison.to_frame().set_index("score")
    assert a.loc["lac", "d_set_size"] == pytest.approx(b.loc["lac", "d_set_size"])
    from cpbench.base.errors import CpbenchError

    with pytest.raises(CpbenchError, match="missing.parquet"):
        cpbench.compare(base_art, base_art.with_name("missing.parquet"))


def test_evaluate_until_decided_matches_check(tmp_path, cache, tiny_dir, capsys):  # noqa: F811
    """`cpbench.evaluate(..., until_decided=True, max_items=N)`: `cpbench run --until-decided`'s staged run; the
    verdict is the sequential gate's, the records carry the design, and `cpbench check --until-decided` on the
    written results (no design flags) gives the same verdict."""
    import json

    import cpbench
    from cpbench.cli import main
    from cpbench.base.errors import CpbenchError

    with pytest.raises(CpbenchError, match="needs results="):
        cpbench.evaluate(base=tiny_dir, recipes=["magnitude-50"], tasks=["qa"], data="samples", until_decided=True)
    with pytest.raises(CpbenchError, match="max_items= applies to until_decided"):
        cpbench.evaluate(base=tiny_dir, recipes=["magnitude-50"], tasks=["qa"], data="samples", max_items=27)
    res = tmp_path / "res"
    report = cpbench.evaluate(base=tiny_dir, recipes=["magnitude-50"], tasks=["qa"], data="samples", results=res,
                              batch_size=4, until_decided=True, max_items=27, first_look=20, futility=0.1,
                              decision={"on_inconclusive": "warn"})  # fmt: skip
    rows = report.verdict.to_frame()
    assert rows["reasons"].str.startswith("sequential:").all()
    assert any("looks at 20, 27 items" in n for n in report.notes)
    (status,) = set(rows["status"])
    cand = next(r for r in report.records if r["run_key"]["score"]["recipe"] == "magnitude-50")
    block = cand["provenance"]["extra"]["sequential"]
    assert block["cell"]["status"] == status and block["looks"] == [20, 27]
    assert block["futility"] == 0.1  # futility= reaches the stored design
    stored = json.loads(next((p for p in res.rglob("*.json") if p.parent.name == "magnitude-50")).read_text())
    assert stored["provenance"]["extra"]["sequential"] == block
    model_dir = next(p for p in res.iterdir() if p.is_dir())
    rc = main(["check", "--baseline", str(model_dir / "base"), "--candidate", str(model_dir / "magnitude-50"),
               "--until-decided", "--on-inconclusive", "warn"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == report.verdict.exit_code and status in out
