"""lm-evaluation-harness outputs of a base and a compressed model pair: `cpbench analyze --model/--recipe`, names
read from `results_*.json`, directories as inputs, and a gate verdict on the pair with no hand editing."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from cpbench.cli import main

TASK = "mmlu_tiny"
DATE = "2026-11-29T10-00-00.123456"


def write_run(root, name, lls, golds, *, pretrained, n_shot=5, results=True, date=DATE):
    """An lm-eval `--output_path root --log_samples` run: root/<name>/samples_<task>_<date>.jsonl (+ results)."""
    d = root / name
    d.mkdir(parents=True)
    rows = []
    for i, (row, gold) in enumerate(zip(lls, golds)):
        k = len(row)
        rows.append({
            "doc_id": i, "doc": {"question": f"q{i}"}, "target": int(gold),
            "arguments": {f"gen_args_{j}": {"arg_0": f"q{i}\nAnswer:", "arg_1": f" c{j}"} for j in range(k)},
            "resps": [[[str(v), "False"]] for v in row], "filtered_resps": [[str(v), "False"] for v in row],
            "filter": "none", "metrics": ["acc"], "acc": float(np.argmax(row) == gold),
            "doc_hash": f"d{i}", "prompt_hash": f"p{i}", "target_hash": f"t{gold}",
        })  # fmt: skip
    (d / f"samples_{TASK}_{date}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if results:
        (d / f"results_{date}.json").write_text(json.dumps({
            "results": {TASK: {"alias": TASK, "acc,none": 0.5}},
            "configs": {TASK: {"task": TASK, "num_fewshot": n_shot}},
            "n-shot": {TASK: n_shot},
            "config": {"model": "hf", "model_args": f"pretrained={pretrained},dtype=bfloat16", "batch_size": "8",
                       "limit": None, "model_dtype": "torch.bfloat16"},
            "git_hash": "abc1234", "date": 1764410400.0, "model_name": pretrained,
            "model_name_sanitized": pretrained.replace("/", "__"),
        }))  # fmt: skip
    return d


@pytest.fixture
def runs(tmp_path):
    """Base and compressed runs of the same 240 items: the compressed model's log-likelihoods carry more noise
    around the same gold margin, so it is less sure and its conformal sets grow by well over 0.25 options."""
    rng = np.random.default_rng(0)
    n, k = 240, 4
    golds = rng.integers(0, k, n)
    lls = rng.normal(0, 1, (n, k))
    lls[np.arange(n), golds] += 2.5
    flat = lls + rng.normal(0, 2.0, (n, k))
    root = tmp_path / "lm_eval_out"
    base = write_run(root, "org__llama-8b", lls, golds, pretrained="org/llama-8b")
    comp = write_run(root, "llama-8b-w4a16", flat, golds, pretrained="/ckpt/llama-8b-w4a16")
    return base, comp


def test_two_lm_eval_runs_pair_with_model_and_recipe_and_gate(runs, tmp_path, capsys):
    from cpbench.results.analysis.compare import ArtifactIndex
    from cpbench.results.analysis.decoupling import DecouplingConfig, decoupling_table
    from cpbench.results.store import load_results

    base, comp = runs
    res = tmp_path / "results"
    (base_file,) = base.glob("samples_*.jsonl")
    (comp_file,) = comp.glob("samples_*.jsonl")
    assert main(["analyze", str(base_file), "--model", "llama-8b", "--recipe", "base", "--results", str(res)]) == 0
    assert main(["analyze", str(comp_file), "--model", "llama-8b", "--recipe", "w4a16", "--results", str(res)]) == 0
    df, skipped = load_results(res)
    assert not skipped and set(df["recipe"]) == {"base", "w4a16"} and set(df["model"]) == {"llama-8b"}
    assert df["items_hash"].nunique() == 1 and df["data"].nunique() == 1  # same items: same data tag, same hash
    assert len(list(res.rglob("artifacts/*.parquet"))) == 2  # the logits are kept beside the records
    dec = decoupling_table(df, DecouplingConfig(), artifacts=ArtifactIndex(res))
    row = dec[(dec["recipe"] == "w4a16") & (dec["score"] == "lac")].iloc[0]
    assert row["category"] in ("hidden-risk", "coupled"), row["note"]
    assert row["d_set_size"] > 0.25 and row["d_set_size_lo"] > 0.25  # item-level interval clears the limit
    capsys.readouterr()
    junit = tmp_path / "junit.xml"
    rc = main(["check", "--baseline", str(res / "llama-8b" / "base"), "--candidate", str(res / "llama-8b" / "w4a16"),
               "--junit", str(junit)])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 1 and "FAIL" in out and "set size +" in out  # the flatter model's sets grew past the limit
    assert "<failure" in junit.read_text()


def test_names_and_settings_come_from_results_json(runs, tmp_path, capsys):
    base, comp = runs
    res = tmp_path / "results"
    # a directory is an input; model, task and n-shot are read from the results file beside the samples
    assert main(["analyze", str(base), "--results", str(res), "--json"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    key = line["run_key"]["score"]
    assert (key["model"], key["recipe"], key["task"], key["shots"], key["scoring"]) == (
        "org/llama-8b", "base", TASK, 5, "cloze")
    lm = line["provenance"]["lm_eval"]
    assert lm["model_args"]["pretrained"] == "org/llama-8b" and lm["dtype"] == "bfloat16" and lm["backend"] == "hf"
    assert lm["results_file"].endswith(f"results_{DATE}.json")
    # the compressed run names its local checkpoint by folder; --model puts it beside the base
    assert main(["analyze", str(comp), "--results", str(res), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip())["run_key"]["score"]["model"] == "llama-8b-w4a16"
    assert main(["analyze", str(comp), "--model", "org/llama-8b", "--recipe", "w4a16", "--results", str(res)]) == 0
    capsys.readouterr()
    rc = main(["check", "--baseline", str(res / "org--llama-8b" / "base"),
               "--candidate", str(res / "org--llama-8b" / "w4a16")])  # fmt: skip
    assert rc == 1


def test_without_results_json_and_empty_directory(tmp_path, capsys):
    rng = np.random.default_rng(1)
    lls, golds = rng.normal(0, 1, (60, 4)), rng.integers(0, 4, 60)
    d = write_run(tmp_path, "run", lls, golds, pretrained="x/y", results=False)
    assert main(["analyze", str(d), "--json"]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["run_key"]["score"]["model"] == "unknown" and line["run_key"]["score"]["shots"] == 0
    assert any("no lm-eval results_*.json" in n for n in line["provenance"]["notes"])
    (tmp_path / "empty").mkdir()
    assert main(["analyze", str(tmp_path / "empty")]) == 2
    assert "no inputs in this directory" in capsys.readouterr().err
    # a results file that is not an object is one line, exit 2
    (d / f"results_{DATE}.json").write_text("[1, 2]")
    assert main(["analyze", str(d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an lm-eval results file" in err[0]


def test_pickles_take_model_and_recipe(tmp_path, capsys):
    """LLM-Uncertainty-Bench pickles: --model/--recipe name the run, so a base and a compressed pickle pair."""
    rng = np.random.default_rng(2)
    n = 60
    answers = [str("ABCDEF"[i]) for i in rng.integers(0, 6, n)]
    data = tmp_path / "data.json"
    data.write_text(json.dumps([{"id": i, "answer": a} for i, a in enumerate(answers)]))
    for name in ("m_base", "m_comp"):
        rows = [{"id": i, "logits_options": rng.normal(0, 1, 6).astype(np.float32)} for i in range(n)]
        (tmp_path / f"{name}.pkl").write_bytes(pickle.dumps(rows, protocol=4))
    res = tmp_path / "res"
    for name, recipe in (("m_base", "base"), ("m_comp", "gptq-4bit")):
        assert main(["analyze", str(tmp_path / f"{name}.pkl"), "--labels", str(data), "--model", "m",
                     "--recipe", recipe, "--results", str(res)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["check", "--baseline", str(res / "m" / "base"), "--candidate", str(res / "m" / "gptq-4bit")]) in (0, 1)
    assert "gptq-4bit" in capsys.readouterr().out


def test_analyze_with_results_imports_no_torch(runs, tmp_path):
    """`cpbench analyze DIR --model --recipe --results` belongs to the light install: no torch, no transformers."""
    import subprocess
    import sys

    base, _ = runs
    code = ("import sys; from cpbench.cli import main; "
            f"rc = main(['analyze', {str(base)!r}, '--model', 'm', '--recipe', 'base', '--results', "
            f"{str(tmp_path / 'res')!r}, '--json']); "
            "assert rc == 0, rc; assert 'torch' not in sys.modules and 'transformers' not in sys.modules")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert list((tmp_path / "res" / "m" / "base" / "artifacts").glob("*.parquet"))
