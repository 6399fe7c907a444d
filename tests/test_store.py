"""Results store: atomic writes at the documented path, and a loader that merges only valid records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from result_factory import make_record

from cpbench.errors import CpbenchError
from cpbench.runkey import RunKey
from cpbench.store import KEY_COLS, load_results, write_result


def test_write_result_path_layout(tmp_path: Path) -> None:
    rec = make_record("org/Model-7B", "gptq-4bit", "qa")
    path = write_result(rec, tmp_path)
    slug = RunKey.model_validate(rec["run_key"]).slug()
    assert path == tmp_path / "org--Model-7B" / "gptq-4bit" / f"{slug}.json"
    assert json.loads(path.read_text()) == rec
    # the write left no temporary file beside the record
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_recipe_with_colon_is_filesystem_safe(tmp_path: Path) -> None:
    path = write_result(make_record("tiny", "sparsegpt-2:4", "qa"), tmp_path)
    assert path.parent.name == "sparsegpt-2-4"


def test_invalid_record_is_refused_and_nothing_written(tmp_path: Path) -> None:
    rec = make_record()
    rec["acc"] = float("nan")
    with pytest.raises(CpbenchError, match="acc"):
        write_result(rec, tmp_path)
    rec = make_record()
    rec["schema"] = "cpbench.result/2"
    with pytest.raises(CpbenchError, match="schema"):
        write_result(rec, tmp_path)
    rec = make_record()
    rec["calibration"]["ece"] = float("inf")  # not a field the store checks, but JSON cannot hold it
    with pytest.raises(CpbenchError, match="not valid JSON"):
        write_result(rec, tmp_path)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_load_one_row_per_score_with_per_split_arrays(tmp_path: Path) -> None:
    ps_acc = np.linspace(0.5, 0.7, 20)
    ps_ss = np.linspace(2.0, 3.0, 20)
    write_result(make_record("m", "base", "qa", acc=ps_acc, set_size=ps_ss, aps_set_size=2.5), tmp_path)
    df, skipped = load_results(tmp_path)
    assert skipped == []
    assert list(df["score"]) == ["aps", "lac"]
    lac = df[df["score"] == "lac"].iloc[0]
    np.testing.assert_array_equal(lac["ps_acc"], ps_acc)
    np.testing.assert_array_equal(lac["ps_set_size"], ps_ss)
    assert lac["acc"] == pytest.approx(ps_acc.mean())
    assert lac["set_size"] == pytest.approx(ps_ss.mean())
    assert df[df["score"] == "aps"].iloc[0]["set_size"] == pytest.approx(2.5)
    assert lac["items_hash"].startswith("sha256:")
    for col in KEY_COLS:
        assert col in df.columns


def test_loader_reports_every_bad_file_and_merges_none(tmp_path: Path) -> None:
    good = write_result(make_record("m", "base", "qa"), tmp_path)
    d = good.parent
    (d / "half.json").write_text(good.read_text()[:200])  # a write cut off mid-way
    (d / "foreign.json").write_text(json.dumps({"name": "package.json-like", "version": 1}))
    (d / "list.json").write_text("[1, 2, 3]")
    other = make_record("m", "base", "rc")
    other["schema"] = "cpbench.result/0"
    (d / "old.json").write_text(json.dumps(other))
    badkey = make_record("m", "base", "ci")
    badkey["run_key"]["score"]["shots"] = -1
    (d / "badkey.json").write_text(json.dumps(badkey))
    ragged = make_record("m", "base", "drs")
    ragged["per_split"]["lac"]["set_size"] = ragged["per_split"]["lac"]["set_size"][:-1]
    (d / "ragged.json").write_text(json.dumps(ragged))
    (d / f".{good.name}.abc123.tmp").write_text("{")
    (d / "README.md").write_text("notes")
    (d / "artifacts").mkdir()
    (d / "artifacts" / "cell.parquet").write_bytes(b"PAR1")  # cpbench run keeps artifacts here: not reported
    (tmp_path / "zz-copy").mkdir()  # sorts after m/: the original is kept, the copy reported
    (tmp_path / "zz-copy" / "dup.json").write_text(good.read_text())  # same run key as `good`

    df, skipped = load_results(tmp_path)
    assert set(df["task"]) == {"qa"} and len(df) == 2  # only the good record, both scores
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert "not valid JSON" in reasons["half.json"]
    assert "no 'schema'" in reasons["foreign.json"]
    assert "not an object" in reasons["list.json"]
    assert "cpbench.result/0" in reasons["old.json"]
    assert "bad run_key" in reasons["badkey.json"] and "shots" in reasons["badkey.json"]
    assert "different lengths" in reasons["ragged.json"]
    assert "temporary" in reasons[f".{good.name}.abc123.tmp"]
    assert "not a .json" in reasons["README.md"]
    assert "duplicate run key" in reasons["dup.json"]
    assert len(skipped) == 9 and "cell.parquet" not in reasons


def test_loader_order_is_independent_of_write_order(tmp_path: Path) -> None:
    recs = [make_record(m, r, t, seed=i) for i, (m, r, t) in enumerate(
        [(m, r, t) for m in ("b", "a") for r in ("gptq-4bit", "base") for t in ("rc", "qa")])]
    for rec in recs:
        write_result(rec, tmp_path / "one")
    for rec in reversed(recs):
        write_result(rec, tmp_path / "two")
    a, _ = load_results(tmp_path / "one")
    b, _ = load_results(tmp_path / "two")
    cols = [c for c in a.columns if not c.startswith("ps_")]
    assert a[cols].equals(b[cols])
    assert list(a[["model", "recipe", "task"]].itertuples(index=False, name=None)) == sorted(
        a[["model", "recipe", "task"]].itertuples(index=False, name=None))


def test_loader_accepts_a_single_file_and_rejects_a_missing_path(tmp_path: Path) -> None:
    path = write_result(make_record(), tmp_path)
    df, skipped = load_results(path)
    assert len(df) == 2 and skipped == []
    with pytest.raises(CpbenchError, match="no such"):
        load_results(tmp_path / "absent")


def test_record_without_per_split_loads_with_none(tmp_path: Path) -> None:
    write_result(make_record(with_per_split=False), tmp_path)
    df, skipped = load_results(tmp_path)
    assert skipped == [] and all(v is None for v in df["ps_set_size"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.floats(min_value=1.0, max_value=6.0, allow_nan=False), min_size=2, max_size=30))
def test_per_split_values_round_trip_exactly(tmp_path: Path, values: list[float]) -> None:
    root = tmp_path / f"r{abs(hash(tuple(values)))}"
    write_result(make_record(splits=len(values), set_size=values), root)
    df, _ = load_results(root)
    lac = df[df["score"] == "lac"].iloc[0]
    assert lac["ps_set_size"].tolist() == values


def test_json_list_of_records_loads_each(tmp_path: Path) -> None:
    """`cpbench analyze A B --out f.json` writes a list; every element is a record, bad elements are reported."""
    bad = make_record("m", "base", "ci")
    bad["schema"] = "cpbench.result/9"
    (tmp_path / "many.json").write_text(json.dumps([make_record("m", "base", "qa"), make_record("m", "q", "qa"), bad]))
    df, skipped = load_results(tmp_path)
    assert sorted(set(df["recipe"])) == ["base", "q"] and len(df) == 4
    assert [Path(s.path).name for s in skipped] == ["many.json#2"]
    assert set(df["path"]) == {"many.json#0", "many.json#1"}


def test_records_from_cpbench_analyze_load(tmp_path: Path) -> None:
    """Real records: a synthetic artifact analysed by `cpbench.conformal.protocols`, stored and loaded back."""
    analyze = pytest.importorskip("cpbench.conformal.protocols")
    from cpbench.artifact import LogitsArtifact
    from cpbench.runkey import AnalysisKey, ScoreKey

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, 300)
    logits = rng.normal(0, 1, (300, 6)).astype(np.float32)
    logits[np.arange(300), labels] += 1.5
    key = ScoreKey(model="tiny", recipe="base", task="qa", data="samples")
    art = LogitsArtifact(ids=[f"q{i}" for i in range(300)], labels=labels, logits=logits, letters=list("ABCDEF"),
                         provenance={"run_key": key.model_dump(), "sample_data": True})
    record = analyze.analyze_artifact(art, AnalysisKey(splits=10), ["lac", "aps"])
    path = write_result(record, tmp_path)
    assert path.parent == tmp_path / "tiny" / "base"
    df, skipped = load_results(tmp_path)
    assert skipped == [] and sorted(df["score"]) == ["aps", "lac"]
    lac = df[df["score"] == "lac"].iloc[0]
    assert len(lac["ps_set_size"]) == 10 and lac["set_size"] == pytest.approx(lac["ps_set_size"].mean())
    assert lac["acc"] == pytest.approx(lac["ps_acc"].mean()) and bool(lac["sample_data"])
    assert lac["artifact_hash"] == art.content_hash and lac["n"] == 300


def test_notes_keep_their_own_semicolons(tmp_path: Path) -> None:
    from cpbench.store import merge_notes, split_notes

    write_result(make_record(notes=["weights were GGUF Q4_1; the fp32 'baseline' is their dequantization", "second"]),
                 tmp_path)
    df, _ = load_results(tmp_path)
    assert split_notes(df["notes"].iloc[0]) == ["second",
                                                "weights were GGUF Q4_1; the fp32 'baseline' is their dequantization"]
    merged = split_notes(merge_notes([df["notes"].iloc[0], "second", "third"]))
    assert len(merged) == 3 and "third" in merged
