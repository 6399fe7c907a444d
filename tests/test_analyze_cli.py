"""`cpbench analyze` end to end: output formats, the result record, errors (exit 2, one line), no torch import,
permutation invariance of the default protocol."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpbench.results.conformal.protocols import analyze_artifact, preset
from cpbench.results.artifact import FORMAT, LogitsArtifact, content_hash
from cpbench.cli import main

LETTERS = ["A", "B", "C", "D", "E", "F"]


def synthetic_artifact(n=400, seed=0, model="m", recipe="base") -> LogitsArtifact:
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(n, 6)) * 2).astype(np.float32)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = np.minimum((rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1), 5)
    return LogitsArtifact(
        ids=[f"q{i:04d}" for i in range(n)], labels=labels, logits=logits, letters=LETTERS,
        provenance={"run_key": {"model": model, "recipe": recipe, "task": "qa"}, "model_id": model},
    )


@pytest.fixture
def art_path(tmp_path):
    return synthetic_artifact().save(tmp_path / "a.parquet")


def run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_lines_and_record(art_path, tmp_path, capsys):
    code, out, err = run(["analyze", str(art_path), "--splits", "20", "--json"], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert "per_split" not in rec
    full = analyze_artifact(LogitsArtifact.load(art_path), preset(splits=20))
    for key in ("n", "k", "n_cal", "n_test", "acc", "acc_std", "acc_split_range95", "calibration", "lac", "aps",
                "letters"):
        assert rec[key] == full[key], key
    assert rec["input"] == str(art_path) and rec["schema"] == "cpbench.result/3"
    assert rec["run_key"]["score"]["model"] == "m" and rec["run_key"]["analysis"]["splits"] == 20
    assert rec["provenance"]["artifact_hash"] == LogitsArtifact.load(art_path).content_hash
    for s in ("lac", "aps"):
        assert set(rec[s]) >= {"coverage", "set_size", "uacc", "qhat", "coverage_std", "coverage_split_range95",
                               "size_hist", "coverage_by_size", "coverage_by_class"}
        assert abs(sum(rec[s]["size_hist"]) - 1) < 1e-12 and len(rec[s]["size_hist"]) == 7
    # means are across splits: recompute from per_split
    assert full["acc"] == pytest.approx(np.mean(full["per_split"]["acc"]))
    assert full["lac"]["coverage"] == pytest.approx(np.mean(full["per_split"]["lac"]["coverage"]))
    assert full["lac"]["coverage_std"] == pytest.approx(np.std(full["per_split"]["lac"]["coverage"], ddof=1))
    assert full["lac"]["uacc"] == pytest.approx(
        np.mean(np.array(full["per_split"]["acc"]) * np.sqrt(6) / np.array(full["per_split"]["lac"]["set_size"])))
    assert len(full["per_split"]["aps"]["qhat"]) == 20


def test_out_one_object_or_a_list(art_path, tmp_path, capsys):
    out1 = tmp_path / "r1.json"
    assert run(["analyze", str(art_path), "--splits", "5", "--out", str(out1)], capsys)[0] == 0
    one = json.loads(out1.read_text())
    assert isinstance(one, dict) and len(one["per_split"]["acc"]) == 5
    other = synthetic_artifact(seed=1).save(tmp_path / "b.parquet")
    out2 = tmp_path / "sub" / "r2.json"
    code, out, _ = run(["analyze", str(art_path), str(other), "--splits", "5", "--out", str(out2), "--json"], capsys)
    assert code == 0 and len(out.strip().splitlines()) == 2
    both = json.loads(out2.read_text())
    assert isinstance(both, list) and [r["input"] for r in both] == [str(art_path), str(other)]
    # each record is its own input's analysis (b has other labels and logits), with the default 0.5 calibration ratio
    assert both[0]["per_split"] == one["per_split"] and both[1]["per_split"] != one["per_split"]
    assert [(r["n_cal"], r["n_test"]) for r in both] == [(200, 200)] * 2


def test_table_output(art_path, capsys):
    code, out, _ = run(["analyze", str(art_path), "--splits", "5", "--scores", "lac,aps,raps"], capsys)
    assert code == 0
    assert "a.parquet" in out and "LAC cov" in out and "RAPS UAcc" in out and "protocol default" in out


def test_permuting_items_changes_nothing(tmp_path):
    art = synthetic_artifact(n=300)
    perm = np.random.default_rng(5).permutation(300)
    shuffled = LogitsArtifact(ids=[art.ids[i] for i in perm], labels=art.labels[perm], logits=art.logits[perm],
                              letters=art.letters, provenance=art.provenance)
    key = preset(splits=30, seed=3)
    names = ("lac", "aps", "aps_rand", "raps")
    a, b = analyze_artifact(art, key, names), analyze_artifact(shuffled, key, names)
    assert a["per_split"] == b["per_split"]
    for s in names:
        assert a[s] == b[s]
    assert a["calibration"] == b["calibration"]


def test_chunk_size_does_not_change_the_record():
    art = synthetic_artifact(n=250)
    key = preset(splits=23, stratify=True)
    a = analyze_artifact(art, key, ("lac", "aps", "raps_rand"), chunk=23)
    for c in (1, 4, 10):
        b = analyze_artifact(art, key, ("lac", "aps", "raps_rand"), chunk=c)
        assert b["per_split"] == a["per_split"] and b["calibration"] == a["calibration"]


def test_version_and_help(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.startswith("cpbench ")
    code, out, _ = run(["analyze", "--help"], capsys)
    assert code == 0 and "--protocol" in out and "--labels" in out


def _write_raw(path, ids, labels, logits, letters=LETTERS):
    """A Parquet artifact written without LogitsArtifact's checks (to get bad files onto disk)."""
    flat = pa.array(np.asarray(logits, dtype=np.float32).reshape(-1), type=pa.float32())
    t = pa.table({"id": pa.array(ids), "label": pa.array(np.asarray(labels, dtype=np.int32)),
                  "logits": pa.FixedSizeListArray.from_arrays(flat, len(letters))})
    header = {"format": FORMAT, "letters": letters, "provenance": {},
              "content_hash": content_hash([str(i) for i in ids], np.asarray(labels), np.asarray(logits, np.float32),
                                           letters, {}, None)}
    pq.write_table(t.replace_schema_metadata({b"cpbench": json.dumps(header).encode()}), path)
    return path


def error_cases(tmp_path, art_path):
    nan = np.zeros((10, 6))
    nan[4, 1] = np.nan
    ye = tmp_path / "x_mmlu_10k_base_icl1.pkl"
    import pickle

    ye.write_bytes(pickle.dumps([{"id": i + 1, "logits_options": np.zeros(6, np.float32)} for i in range(3)]))
    (tmp_path / "d.json").write_text(json.dumps([{"id": i, "answer": "A"} for i in range(3)]))
    return {
        "missing file": (["analyze", str(tmp_path / "nope.parquet")], "no such file"),
        "nan logits": (["analyze", str(_write_raw(tmp_path / "nan.parquet", [str(i) for i in range(10)],
                                                  np.zeros(10), nan))], "non-finite logits"),
        "label outside": (
            ["analyze", str(_write_raw(tmp_path / "lab.parquet", [str(i) for i in range(10)], np.r_[np.zeros(9), 6],
                                       np.zeros((10, 6))))],
            "outside the 6 options",
        ),
        "ids vs labels": (["analyze", str(ye), "--labels", str(tmp_path / "d.json")], "id mismatch"),
        "alpha > 1": (["analyze", str(art_path), "--alpha", "1.5"], "alpha must be in (0, 1)"),
        "alpha 0": (["analyze", str(art_path), "--alpha", "0"], "alpha must be in (0, 1)"),
        "empty calibration": (["analyze", str(_write_raw(tmp_path / "one.parquet", ["a"], [0], np.zeros((1, 6))))],
                              "empty calibration set"),
        "too few calibration": (["analyze", str(_write_raw(tmp_path / "ten.parquet", [str(i) for i in range(10)],
                                                           np.zeros(10), np.zeros((10, 6))))], "too few for alpha"),
        "unknown score": (["analyze", str(art_path), "--scores", "lac,xyz"], "score 'xyz' is not available"),
        "ye2024 splits": (["analyze", str(art_path), "--protocol", "ye2024", "--splits", "5"], "exactly one split"),
        "protocol": (["analyze", str(art_path), "--protocol", "ye2025"], "unknown protocol"),
        "pickle without labels": (["analyze", str(ye)], "needs --labels"),
    }


def test_errors_exit_2_with_one_line(tmp_path, art_path, capsys):
    for name, (args, message) in error_cases(tmp_path, art_path).items():
        code, out, err = run(args, capsys)
        assert code == 2, (name, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("cpbench: error: ") and message in lines[0], (name, err)


def test_subprocess_and_no_heavy_imports(tmp_path, art_path):
    """As a real process: exit codes, and `cpbench analyze` never imports torch or transformers."""
    script = (
        "import sys, json\n"
        "from cpbench.cli import main\n"
        f"code = main(['analyze', {str(art_path)!r}, '--splits', '10', '--json'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'llmcompressor'))\n"
        "print(json.dumps({'code': code, 'heavy': heavy}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert json.loads(lines[0])["n"] == 400
    assert json.loads(lines[-1]) == {"code": 0, "heavy": []}
    proc = subprocess.run([sys.executable, "-m", "cpbench", "analyze", str(tmp_path / "missing.parquet")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"cpbench: error: {tmp_path / 'missing.parquet'}: no such file"]


def test_items_hash_pairs_records_of_the_same_items_only():
    """Same ids+labels -> same items_hash whatever the logits (recipes differ); other labels -> another hash."""
    rng = np.random.default_rng(0)
    ids, labels = [f"q{i}" for i in range(40)], rng.integers(0, 4, 40)
    mk = lambda lab: LogitsArtifact(ids=ids, labels=lab, logits=rng.normal(size=(40, 6)), letters=list("ABCDEF"))
    key = preset("default", splits=5)
    a, b = analyze_artifact(mk(labels), key), analyze_artifact(mk(labels), key)
    c = analyze_artifact(mk((labels + 1) % 4), key)
    assert a["items_hash"] == b["items_hash"] != c["items_hash"]
    assert a["provenance"]["artifact_hash"] != b["provenance"]["artifact_hash"]
