"""Typed records (cpbench.results.records): one model for writer, store and factory; migration of schema 1; range checks
reach the CLI as one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from result_factory import make_record

from cpbench.results.artifact import LogitsArtifact
from cpbench.cli import main
from cpbench.results.conformal.protocols import analyze_artifact
from cpbench.base.errors import CpbenchError
from cpbench.results.records import SCHEMA, ArtifactProvenance, ResultRecord, build_record, load_record, migrate_v1, migrate_v2
from cpbench.base.runkey import AnalysisKey, ScoreKey
from cpbench.results.store import write_result


def _artifact(n: int = 200, **prov) -> LogitsArtifact:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, n)
    logits = rng.normal(0, 1, (n, 6)).astype(np.float32)
    logits[np.arange(n), labels] += 1.0
    key = ScoreKey(model="tiny", task="qa", data="samples")
    return LogitsArtifact(ids=[f"q{i}" for i in range(n)], labels=labels, logits=logits, letters=list("ABCDEF"),
                          provenance={"run_key": key.model_dump(), "sample_data": True, **prov})


def test_writer_and_factory_produce_the_same_shape() -> None:
    """The factory's record and analyze_artifact's record have the same keys at every level the store reads."""
    real = analyze_artifact(_artifact(), AnalysisKey(splits=5), ["lac", "aps"])
    fake = make_record(splits=5)
    assert real["schema"] == fake["schema"] == SCHEMA
    assert set(fake) <= set(real) | {"items_hash"}
    for s in ("lac", "aps"):
        assert set(fake[s]) == set(real[s])
        assert set(fake["per_split"][s]) <= set(real["per_split"][s])
    assert set(fake["calibration"]) == set(real["calibration"])
    assert set(fake["protocol"]) <= set(real["protocol"])
    # both validate, and round-trip unchanged through the model
    for rec in (real, fake):
        assert load_record(json.loads(json.dumps(rec))).to_json() == rec
    assert "model_params" not in json.dumps(make_record(params=1e9))  # the key production never wrote
    assert make_record(params=1e9)["provenance"]["n_params"] == 1e9


def test_writer_refuses_impossible_provenance() -> None:
    art = _artifact(notes=["ok"])
    art.provenance["n_params"] = -5.0
    with pytest.raises(CpbenchError, match="n_params"):
        analyze_artifact(art, AnalysisKey(splits=3), ["lac"])


def test_optional_fields_other_helpers_add() -> None:
    prov = ArtifactProvenance.model_validate({
        "n_params": 1.35e8, "knob": {"bits": 4.0, "sparsity": None}, "scorer": "vllm", "dtype": "bfloat16",
        "candidate": {"model_id": "/ckpt/my-awq", "model_source": "local", "model_name": "my-awq", "notes": []},
    })
    assert prov.candidate is not None and prov.candidate.model_name == "my-awq"
    with pytest.raises(Exception, match="candidate.model_nmae"):
        ArtifactProvenance.model_validate({"candidate": {"model_nmae": "x"}})
    # unset fields are not written: adding an optional field changes no existing file
    assert set(prov.to_json()) == {"n_params", "knob", "scorer", "dtype", "candidate"}


def test_migration_v1_to_v2_is_explicit() -> None:
    rec = make_record(recipe="base")
    old = json.loads(json.dumps(rec))
    old["schema"] = "cpbench.result/1"
    old["run_key"]["score"]["recipe"] = "fp16"
    old["provenance"]["run_key"] = {"model": "tiny", "recipe": "fp16", "task": "qa"}
    for k in [k for k in old if k.endswith("_split_range95")]:  # schema 1 and 2 named the split ranges *_ci95
        old[k.replace("_split_range95", "_ci95")] = old.pop(k)
    for s in ("lac", "aps"):
        for k in [k for k in (old.get(s) or {}) if k.endswith("_split_range95")]:
            old[s][k.replace("_split_range95", "_ci95")] = old[s].pop(k)
    new = migrate_v2(migrate_v1(old))
    assert new["schema"] == SCHEMA and new["run_key"]["score"]["recipe"] == "base"
    assert new["provenance"]["run_key"]["recipe"] == "base" and new["provenance"]["migrated_from"] == old["schema"]
    assert isinstance(ResultRecord.model_validate(new), ResultRecord)
    assert old["run_key"]["score"]["recipe"] == "fp16"  # the input is not modified
    assert load_record(old).acc_split_range95 == tuple(old["acc_ci95"])


def test_migration_v2_renames_the_split_ranges() -> None:
    """Schema 2 called the split percentile ranges `*_ci95`; schema 3 reads them as `*_split_range95` (they are not
    confidence intervals) and a schema-2 record without the rename would be refused as an unknown key."""
    rec = make_record(recipe="base")
    old = json.loads(json.dumps(rec))
    old["schema"] = "cpbench.result/2"
    old["acc_ci95"] = old.pop("acc_split_range95")
    old["lac"]["set_size_ci95"] = old["lac"].pop("set_size_split_range95")
    r = load_record(old)
    assert r.acc_split_range95 == tuple(old["acc_ci95"]) and r.lac.set_size_split_range95 is not None
    assert r.provenance.migrated_from == "cpbench.result/2"
    out = r.to_json()
    assert out["schema"] == SCHEMA == "cpbench.result/3" and not any(k.endswith("_ci95") for k in out)
    old["schema"] = SCHEMA  # the old name under the new schema is an unknown key
    with pytest.raises(CpbenchError, match="_ci95: Extra inputs"):
        load_record(old)


def test_unknown_schema_is_refused_with_how_to_regenerate() -> None:
    rec = make_record()
    rec["schema"] = "cpbench.result/4"
    with pytest.raises(CpbenchError, match="regenerate it with `cpbench analyze"):
        load_record(rec)


def test_build_record_one_line() -> None:
    rec = make_record()
    rec["lac"]["coverage"] = 2.0
    with pytest.raises(CpbenchError) as err:
        build_record(rec)
    assert "\n" not in str(err.value) and "lac.coverage" in str(err.value)


def test_check_exits_2_on_an_impossible_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 10: `check` said PASS with accuracy 1.7, coverage 2.0 and set size -3; now it is bad input."""
    write_result(make_record("tiny", "base", "qa"), tmp_path / "base")
    write_result(make_record("tiny", "q", "qa"), tmp_path / "cand")
    bad = make_record("tiny", "q", "rc")
    bad["acc"], bad["lac"]["coverage"], bad["lac"]["set_size"] = 1.7, 2.0, -3.0
    (tmp_path / "cand" / "bad.json").write_text(json.dumps(bad))
    assert main(["check", "--baseline", str(tmp_path / "base"), "--candidate", str(tmp_path / "cand"),
                 "--allow-missing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.json" in err[0] and "acc" in err[0]


def test_leaderboard_survives_one_malformed_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from result_factory import synthetic_tree

    synthetic_tree(tmp_path / "results")
    (tmp_path / "results" / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    (tmp_path / "results" / "utf8.json").write_bytes(b'{"schema": "cpbench.result/2", "x": "\xff"}')
    bad = make_record("zz", "base", "qa")
    bad["lac"]["set_size"] = -3.0
    (tmp_path / "results" / "neg.json").write_text(json.dumps(bad))
    rc = main(["leaderboard", str(tmp_path / "results"), "--out", str(tmp_path / "lb"), "--no-plots"])
    err = capsys.readouterr().err
    assert rc == 0
    assert "deep.json: JSON nested deeper" in err and "utf8.json: not valid UTF-8" in err
    assert "neg.json: invalid result record: lac.set_size" in err


def test_duplicate_run_keys_exit_2_naming_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_result(make_record("tiny", "base", "qa"), tmp_path / "res")
    (tmp_path / "res" / "0-copy.json").write_text(path.read_text())
    rc = main(["leaderboard", str(tmp_path / "res"), "--out", str(tmp_path / "lb"), "--no-plots"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "0-copy.json" in err[0] and path.name in err[0]


# ------------------------------------------------------------------------------------------------ property tests
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_SCALARS = (st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
            | st.text(max_size=8))
_JSON = st.recursive(_SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                     max_leaves=15)
_BASE = make_record(splits=4)


def _leaves(obj, path=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, (*path, i))
    else:
        yield path


_PATHS = list(_leaves(_BASE))


def _invariants(r: dict) -> None:
    """Checked independently of the model: what any merged record must satisfy."""
    assert 0 <= r["acc"] <= 1 and r["n"] == r["n_cal"] + r["n_test"] and r["k"] == len(r["letters"])
    for s in ("lac", "aps"):
        b = r[s]
        assert 0 <= b["coverage"] <= 1 and 0 <= b["set_size"] <= r["k"] and b["uacc"] >= 0
        for v in r.get("per_split", {}).get(s, {}).get("set_size", []):
            assert 0 <= v <= r["k"]
    for v in r.get("per_split", {}).get("acc", []):
        assert 0 <= v <= 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_JSON)
def test_any_json_value_is_a_record_or_one_line(value) -> None:
    for candidate in (value, {"schema": SCHEMA, **value} if isinstance(value, dict) else value):
        try:
            load_record(candidate)
        except CpbenchError as exc:
            assert "\n" not in str(exc)


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, len(_PATHS) - 1), value=_SCALARS | st.lists(_SCALARS, max_size=3))
def test_replacing_any_field_is_refused_or_stays_possible(index: int, value) -> None:
    rec = json.loads(json.dumps(_BASE))
    *parents, last = _PATHS[index]
    holder = rec
    for p in parents:
        holder = holder[p]
    holder[last] = value
    try:
        out = load_record(rec).to_json()
    except CpbenchError as exc:
        assert "\n" not in str(exc)
        return
    _invariants(out)
