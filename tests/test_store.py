"""Results store: atomic writes at the documented path, and a loader that merges only valid records."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from result_factory import make_record

from cpbench.base.errors import CpbenchError
from cpbench.base.runkey import RunKey
from cpbench.results.store import KEY_COLS, load_results, write_result


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
    rec["schema"] = "cpbench.result/9"
    with pytest.raises(CpbenchError, match="schema"):
        write_result(rec, tmp_path)
    rec = make_record()
    rec["calibration"]["ece"] = float("inf")
    with pytest.raises(CpbenchError, match="calibration.ece"):
        write_result(rec, tmp_path)
    rec = make_record()
    rec["provenance"]["extra"] = {"x": float("nan")}  # free-form, but JSON cannot hold it (no silent null)
    with pytest.raises(CpbenchError, match="extra.x: nan is not a finite number"):
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
    (d / "README.md").write_text("notes")
    (d / "artifacts").mkdir()
    (d / "artifacts" / "cell.parquet").write_bytes(b"PAR1")  # cpbench run keeps artifacts here: not reported

    df, skipped = load_results(tmp_path)
    assert set(df["task"]) == {"qa"} and len(df) == 2  # only the good record, both scores
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert "not valid JSON" in reasons["half.json"]
    assert "no 'schema'" in reasons["foreign.json"]
    assert "not an object" in reasons["list.json"]
    assert "cpbench.result/0" in reasons["old.json"] and "regenerate" in reasons["old.json"]
    assert "run_key.score.shots" in reasons["badkey.json"]
    assert "one value per split" in reasons["ragged.json"]
    assert "not a .json" in reasons["README.md"]
    assert len(skipped) == 7 and "cell.parquet" not in reasons
    # the CI gate reads strictly: a file that claims to be a record but is not valid is an error naming it
    with pytest.raises(CpbenchError, match="ragged.json|badkey.json|old.json"):
        load_results(tmp_path, strict=True)


def test_duplicate_run_key_is_an_error_naming_both_files(tmp_path: Path) -> None:
    good = write_result(make_record("m", "base", "qa"), tmp_path)
    (tmp_path / "aa-stale-copy").mkdir()  # sorts first: it used to win silently
    stale = make_record("m", "base", "qa", acc=0.3)
    (tmp_path / "aa-stale-copy" / "copy.json").write_text(json.dumps(stale))
    with pytest.raises(CpbenchError, match="duplicate run key") as err:
        load_results(tmp_path)
    assert "copy.json" in str(err.value) and good.name in str(err.value)


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda r: r.update(acc=1.7), "acc"),
        (lambda r: r["lac"].update(coverage=2.0), "lac.coverage"),
        (lambda r: r["lac"].update(set_size=-3.0), "lac.set_size"),
        (lambda r: r["lac"].update(set_size=6.5), "set_size"),  # above K = 6
        (lambda r: r.update(n=999), "n_cal \\+ n_test"),
        (lambda r: r.update(n_cal=0, n_test=1000), "n_cal"),
        (lambda r: r.update(k=7), "letters"),
        (lambda r: r["calibration"].update(entropy=5.0), "entropy"),
        (lambda r: r["lac"].update(size_hist=[0.5] * 7), "size_hist"),
        (lambda r: r["lac"].update(coverage_split_range95=[0.95, 0.85]), "coverage_split_range95"),
        (lambda r: r.update(acc=0.61), "mean of its"),  # stored mean disagrees with the per-split values
        (lambda r: r["per_split"].update(acc=[1.5] * 20), "per_split.acc"),
        (lambda r: r["lac"].update(coverage="0.9"), "lac.coverage"),  # strings are not numbers
        (lambda r: r["lac"].update(coverage=True), "lac.coverage"),
        (lambda r: r.update(surprise=1), "surprise"),  # unknown keys: typo or damage
        (lambda r: r["provenance"].update(sampel_data=True), "sampel_data"),
        (lambda r: r["provenance"].update(sample_data="yes"), "sample_data"),
        (lambda r: r["run_key"]["score"].update(model="other"), "provenance.run_key in model"),
    ],
)
def test_impossible_records_are_refused_at_write_and_load(tmp_path: Path, edit, field: str) -> None:
    rec = make_record(acc=0.6, set_size=2.0, splits=20)
    edit(rec)
    with pytest.raises(CpbenchError, match=field):
        write_result(rec, tmp_path / "w")
    assert not (tmp_path / "w").exists() or not any(p.is_file() for p in (tmp_path / "w").rglob("*"))
    (tmp_path / "l").mkdir()
    (tmp_path / "l" / "bad.json").write_text(json.dumps(rec))
    write_result(make_record(task="rc"), tmp_path / "l")
    df, skipped = load_results(tmp_path / "l")  # the leaderboard: reported, never merged, no crash
    assert set(df["task"]) == {"rc"} and [Path(s.path).name for s in skipped] == ["bad.json"]
    assert "\n" not in skipped[0].reason and re.search(field, skipped[0].reason)
    with pytest.raises(CpbenchError, match="bad.json"):
        load_results(tmp_path / "l", strict=True)


def test_hostile_json_files_are_skipped_with_one_line(tmp_path: Path) -> None:
    write_result(make_record(task="rc"), tmp_path)
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "utf8.json").write_bytes(b'{"schema": "cpbench.result/2", "input": "\xff\xfe"}')
    (tmp_path / "nan.json").write_text('{"schema": "cpbench.result/2", "acc": NaN}')
    (tmp_path / "bigint.json").write_text('{"schema": "cpbench.result/2", "n": ' + "9" * 5000 + "}")
    df, skipped = load_results(tmp_path)
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert set(df["task"]) == {"rc"}
    assert "nested deeper" in reasons["deep.json"]
    assert "UTF-8" in reasons["utf8.json"]
    assert "NaN" in reasons["nan.json"]
    assert "digits" in reasons["bigint.json"]
    assert all("\n" not in r for r in reasons.values())


def test_schema_1_records_load_through_the_migration(tmp_path: Path) -> None:
    """Committed records are schema 1 (baseline `fp16`); they load as schema 2 with the recipe renamed `base`."""
    rec = make_record("m", "base", "qa", params=1.35e8)
    old = json.loads(json.dumps(rec))
    old["schema"] = "cpbench.result/1"
    old["run_key"]["score"]["recipe"] = "fp16"
    old["provenance"]["model_params"] = old["provenance"].pop("n_params")
    old["provenance"]["some_old_detail"] = {"x": 1}
    (tmp_path / "old.json").write_text(json.dumps(old))
    df, skipped = load_results(tmp_path)
    assert skipped == [] and set(df["recipe"]) == {"base"} and df["params"].iloc[0] == 1.35e8
    from cpbench.results.records import load_record

    migrated = load_record(old)
    assert migrated.provenance.migrated_from == "cpbench.result/1"
    assert migrated.provenance.extra == {"some_old_detail": {"x": 1}} and migrated.provenance.n_params == 1.35e8


def test_committed_results_load(tmp_path: Path) -> None:
    """Whatever schema the committed results/ tree is in, it loads without a skipped record."""
    root = Path(__file__).parent.parent / "results"
    if not root.is_dir():
        pytest.skip("no committed results/")
    df, skipped = load_results(root)
    assert skipped == [] and len(df) > 0 and "fp16" not in set(df["recipe"])


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
    bad["schema"] = "cpbench.result/9"  # a newer cpbench: refused with how to regenerate
    (tmp_path / "many.json").write_text(json.dumps([make_record("m", "base", "qa"), make_record("m", "q", "qa"), bad]))
    df, skipped = load_results(tmp_path)
    assert sorted(set(df["recipe"])) == ["base", "q"] and len(df) == 4
    assert [Path(s.path).name for s in skipped] == ["many.json#2"]
    assert set(df["path"]) == {"many.json#0", "many.json#1"}


def test_records_from_cpbench_analyze_load(tmp_path: Path) -> None:
    """Real records: a synthetic artifact analysed by `cpbench.results.conformal.protocols`, stored and loaded back."""
    analyze = pytest.importorskip("cpbench.results.conformal.protocols")
    from cpbench.results.artifact import LogitsArtifact
    from cpbench.base.runkey import AnalysisKey, ScoreKey

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
    from cpbench.results.store import merge_notes, split_notes

    write_result(make_record(notes=["weights were GGUF Q4_1; the fp32 'baseline' is their dequantization", "second"]),
                 tmp_path)
    df, _ = load_results(tmp_path)
    assert split_notes(df["notes"].iloc[0]) == ["second",
                                                "weights were GGUF Q4_1; the fp32 'baseline' is their dequantization"]
    merged = split_notes(merge_notes([df["notes"].iloc[0], "second", "third"]))
    assert len(merged) == 3 and "third" in merged
