"""Importers: LLM-Uncertainty-Bench pickle + dataset JSON, lm-evaluation-harness --log_samples JSONL."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from cpbench.results.artifact import LogitsArtifact, content_hash_v1
from cpbench.base.errors import CpbenchError
from cpbench.backends.pickles import import_lm_eval_samples, import_ye2024, load_any

LETTERS = ["A", "B", "C", "D", "E", "F"]


def ye_files(tmp_path, n=12, name="Llama-2-13b-hf_halu_dialogue_shared_icl5", protocol=4, answers=None, ids=None):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(n, 6)).astype(np.float32)
    answers = answers or [LETTERS[i % 6] for i in range(n)]
    ids = ids if ids is not None else list(range(n))
    rows = [{"id": i, "logits_options": logits[j]} for j, i in enumerate(ids)]
    data = [{"id": j, "answer": answers[j], "question": "q", "choices": {o: o.lower() for o in LETTERS}}
            for j in range(n)]
    pkl, js = tmp_path / f"{name}.pkl", tmp_path / "data.json"
    pkl.write_bytes(pickle.dumps(rows, protocol=protocol))
    js.write_text(json.dumps(data))
    return pkl, js, logits


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_ye2024_import(tmp_path, protocol):
    pkl, js, logits = ye_files(tmp_path, protocol=protocol)
    art = import_ye2024(pkl, js)
    assert art.ids == [str(i) for i in range(12)]
    assert art.labels.tolist() == [i % 6 for i in range(12)]
    assert art.letters == LETTERS
    assert np.array_equal(art.logits, logits) and art.logits.dtype == np.float32
    prov = art.provenance
    assert prov["run_key"]["model"] == "Llama-2-13b-hf"
    assert prov["run_key"]["task"] == "drs" and prov["run_key"]["prompt"] == "shared" and prov["run_key"]["shots"] == 5
    assert prov["source_format"] == "llm-uncertainty-bench"
    assert prov["source_sha256"]["logits"].startswith("sha256:")
    # it round-trips as a cpbench artifact
    out = art.save(tmp_path / "a.parquet")
    assert LogitsArtifact.load(out).content_hash == art.content_hash


def test_ye2024_import_numpy1_pickle(tmp_path):
    """Their pickles were written by numpy 1.x, which names numpy.core.multiarray (protocol-0 text form here)."""
    pkl, js, logits = ye_files(tmp_path, protocol=0)
    raw = pkl.read_bytes()
    assert b"numpy._core.multiarray" in raw
    pkl.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    art = import_ye2024(pkl, js)
    assert np.array_equal(art.logits, logits)


def test_ye2024_unrecognised_file_name(tmp_path):
    pkl, js, _ = ye_files(tmp_path, name="my_logits")
    art = import_ye2024(pkl, js)
    assert art.provenance["run_key"]["model"] == "my_logits" and art.provenance["run_key"]["task"] == "data"
    assert any("does not follow" in note for note in art.provenance["notes"])


def test_ye2024_errors(tmp_path):
    pkl, js, _ = ye_files(tmp_path, ids=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 99])
    with pytest.raises(CpbenchError, match="id mismatch at position 11"):
        import_ye2024(pkl, js)
    pkl, js, _ = ye_files(tmp_path, answers=["A"] * 11 + ["G"])
    with pytest.raises(CpbenchError, match="outside the options"):
        import_ye2024(pkl, js)
    pkl, js, _ = ye_files(tmp_path)
    js.write_text(json.dumps(json.loads(js.read_text())[:5]))
    with pytest.raises(CpbenchError, match="12 items but .* has 5"):
        import_ye2024(pkl, js)
    with pytest.raises(CpbenchError, match="no such file"):
        import_ye2024(tmp_path / "missing.pkl", js)
    js.write_text("{not json")
    with pytest.raises(CpbenchError, match="not valid JSON"):
        import_ye2024(pkl, js)


def test_ye2024_nan_logits(tmp_path):
    pkl, js, logits = ye_files(tmp_path)
    rows = pickle.loads(pkl.read_bytes())
    rows[3]["logits_options"][2] = np.nan
    pkl.write_bytes(pickle.dumps(rows))
    with pytest.raises(CpbenchError, match="non-finite logits.*'3'"):
        import_ye2024(pkl, js)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    pkl, js, _ = ye_files(tmp_path)
    pkl.write_bytes(pickle.dumps([{"id": 0, "logits_options": _Evil()}]))
    with pytest.raises(CpbenchError, match="refusing to load"):
        import_ye2024(pkl, js)
    pkl.write_bytes(b"definitely not a pickle")
    with pytest.raises(CpbenchError, match="not a readable"):
        import_ye2024(pkl, js)
    pkl.write_bytes(pickle.dumps({"id": 0}))
    with pytest.raises(CpbenchError, match="expected a list"):
        import_ye2024(pkl, js)


# ------------------------------------------------------------------------------------------------------ lm-eval
def lm_eval_rows(n=8, k=4, new_format=True, seed=0):
    rng = np.random.default_rng(seed)
    lls = rng.normal(-5, 2, size=(n, k))
    golds = rng.integers(0, k, n)
    rows = []
    for d in range(n):
        conts = [f" choice {d}-{j}" for j in range(k)]
        if new_format:  # lm-eval >= 0.4.3: sanitised strings, dict arguments, str target
            args = {f"gen_args_{j}": {"arg_0": f"Question {d}\nAnswer:", "arg_1": conts[j]} for j in range(k)}
            resps = [[[str(lls[d, j]), "False"]] for j in range(k)]
            filtered = [[str(lls[d, j]), "False"] for j in range(k)]
            target = str(golds[d])
        else:
            args = [[f"Question {d}\nAnswer:", conts[j]] for j in range(k)]
            resps = [[[float(lls[d, j]), False]] for j in range(k)]
            filtered = [[float(lls[d, j]), False] for j in range(k)]
            target = int(golds[d])
        rows.append({
            "doc_id": d, "doc": {"q": d}, "target": target, "arguments": args, "resps": resps,
            "filtered_resps": filtered, "filter": "none", "metrics": ["acc"],
            "acc": float(np.argmax(lls[d]) == golds[d]),
        })
    return rows, lls, golds


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("new_format", [True, False])
def test_lm_eval_import(tmp_path, new_format):
    rows, lls, golds = lm_eval_rows(new_format=new_format)
    path = write_jsonl(tmp_path / "samples_arc_easy_2026-01-01T00-00-00.123456.jsonl", rows)
    art = import_lm_eval_samples(path, model="org/model")
    assert art.ids == [str(d) for d in range(8)]
    assert art.labels.tolist() == golds.tolist()
    assert art.letters == ["A", "B", "C", "D"]
    np.testing.assert_allclose(art.logits, lls.astype(np.float32))
    assert art.provenance["run_key"]["task"] == "arc_easy"
    assert art.provenance["run_key"]["model"] == "org/model"
    # argmax accuracy equals lm-eval's own per-sample acc
    assert np.mean(art.logits.argmax(axis=1) == art.labels) == np.mean([r["acc"] for r in rows])
    again = load_any(path)  # provenance stamps the import time, so compare the numbers
    assert content_hash_v1(again.ids, again.labels, again.logits, again.letters) == content_hash_v1(
        art.ids, art.labels, art.logits, art.letters)


def test_lm_eval_text_and_letter_targets(tmp_path):
    rows, _, golds = lm_eval_rows(new_format=True)
    rows[0]["target"] = rows[0]["arguments"][f"gen_args_{golds[0]}"]["arg_1"].strip()
    rows[1]["target"] = "ABCD"[golds[1]]
    art = import_lm_eval_samples(write_jsonl(tmp_path / "s.jsonl", rows))
    assert art.labels[:2].tolist() == golds[:2].tolist()


def test_lm_eval_errors(tmp_path):
    rows, _, _ = lm_eval_rows()
    with pytest.raises(CpbenchError, match="appears more than once"):
        import_lm_eval_samples(write_jsonl(tmp_path / "dup.jsonl", rows + rows[:1]))
    bad = [dict(r) for r in rows]
    bad[2] = dict(bad[2], filtered_resps=bad[2]["filtered_resps"][:3])
    with pytest.raises(CpbenchError, match="3 choices, earlier docs have 4"):
        import_lm_eval_samples(write_jsonl(tmp_path / "k.jsonl", bad))
    gen = [{"doc_id": 0, "target": "42", "filtered_resps": ["42"], "resps": [["42"]]}]
    with pytest.raises(CpbenchError, match="multiple-choice"):
        import_lm_eval_samples(write_jsonl(tmp_path / "gen.jsonl", gen))
    bad = [dict(r) for r in rows]
    bad[1]["target"] = "7"
    with pytest.raises(CpbenchError, match="outside the 4 choices"):
        import_lm_eval_samples(write_jsonl(tmp_path / "t.jsonl", bad))
    bad[1]["target"] = "no such choice"
    with pytest.raises(CpbenchError, match="not an index"):
        import_lm_eval_samples(write_jsonl(tmp_path / "t2.jsonl", bad))
    bad = [dict(r) for r in rows]
    bad[0]["filtered_resps"] = [["nan", "False"]] * 4
    with pytest.raises(CpbenchError, match="non-finite"):
        import_lm_eval_samples(write_jsonl(tmp_path / "nan.jsonl", bad))
    (tmp_path / "junk.jsonl").write_text("{oops\n")
    with pytest.raises(CpbenchError, match=r"junk.jsonl:1: not valid JSON"):
        import_lm_eval_samples(tmp_path / "junk.jsonl")


def test_load_any_dispatch(tmp_path):
    pkl, js, _ = ye_files(tmp_path)
    with pytest.raises(CpbenchError, match="needs --labels"):
        load_any(pkl)
    assert load_any(pkl, js).n == 12
    with pytest.raises(CpbenchError, match="no such file"):
        load_any(tmp_path / "nope.parquet")
