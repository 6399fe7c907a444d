"""Bad input, as a user hits it, through the real command line: exit code 2, exactly one `cpbench: error: ...` line
on stderr that names the problem, never a traceback (the gate's regression exit 1 is by design).

Most cases run in-process through `cpbench.cli.main` (fast); a few run as real subprocesses, because the console
script is what users call and a usage error used to escape `main` as a traceback only there and in-process alike.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpbench.results.artifact import FORMAT, LogitsArtifact, content_hash
from cpbench.cli import main
from cpbench.base.errors import CpbenchError

N = 200
LETTERS = list("ABCDEF")


def _raw_parquet(path: Path, ids, labels, logits, header: object = "default") -> None:
    """An artifact written around LogitsArtifact.save's validation, to hold what save refuses to write."""
    table = pa.table({
        "id": pa.array(ids, type=pa.string()),
        "label": pa.array(np.asarray(labels, dtype=np.int32), type=pa.int32()),
        "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.reshape(-1), type=pa.float32()), logits.shape[1]),
    })
    if header == "default":
        header = {"format": FORMAT, "letters": LETTERS, "provenance": {}}
    if header is not None:
        table = table.replace_schema_metadata({b"cpbench": json.dumps(header).encode()})
    pq.write_table(table, path)


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("badinput")
    rng = np.random.default_rng(0)
    ids = [str(i) for i in range(N)]
    labels = rng.integers(0, 6, N)
    logits = rng.normal(size=(N, 6)).astype(np.float32)
    LogitsArtifact(ids=ids, labels=labels, logits=logits, letters=LETTERS).save(d / "good.parquet")
    nan = logits.copy()
    nan[5, 2] = np.nan
    _raw_parquet(d / "nan.parquet", ids, labels, nan)
    inf = logits.copy()
    inf[7, 0] = -np.inf
    _raw_parquet(d / "inf.parquet", ids, labels, inf)
    out_of_range = labels.copy()
    out_of_range[3] = 6
    _raw_parquet(d / "label6.parquet", ids, out_of_range, logits)
    dup = list(ids)
    dup[10] = "3"
    _raw_parquet(d / "dup.parquet", dup, labels, logits)
    _raw_parquet(d / "noheader.parquet", ids, labels, logits, header=None)
    _raw_parquet(d / "headerlist.parquet", ids, labels, logits, header=[1, 2])
    _raw_parquet(d / "badhash.parquet", ids, labels, logits,
                 header={"format": FORMAT, "letters": LETTERS, "content_hash": "sha256:" + "0" * 64})
    good = (d / "good.parquet").read_bytes()
    (d / "truncated.parquet").write_bytes(good[: len(good) // 2])
    (d / "empty.parquet").write_bytes(b"")
    (d / "json.parquet").write_text('{"a": 1}')
    (d / "adir.parquet").mkdir()
    (d / "notes.txt").write_text("hello\n")
    assert content_hash(ids, labels, logits, LETTERS)  # the good artifact's hash is what load checks
    # LLM-Uncertainty-Bench pickle + dataset JSON
    (d / "m_mmlu_10k_base_icl0.pkl").write_bytes(
        pickle.dumps([{"id": i, "logits_options": logits[i]} for i in range(N)]))
    items = [{"id": i, "answer": LETTERS[labels[i]]} for i in range(N)]
    (d / "labels_shifted.json").write_text(json.dumps([dict(it, id=it["id"] + 1) for it in items]))
    (d / "labels_G.json").write_text(json.dumps([dict(it, answer="G") if it["id"] == 4 else it for it in items]))
    (d / "labels_bad.json").write_text("[{")
    (d / "evil.pkl").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    (d / "bad.jsonl").write_text("{not json}\n")
    # results trees
    (d / "res_empty").mkdir()
    (d / "res_foreign").mkdir()
    (d / "res_foreign" / "x.json").write_text('{"foo": "bar"}')
    (d / "res_foreign" / "broken.json").write_text("{broken")
    sys.path.insert(0, str(Path(__file__).parent))
    from result_factory import make_record

    from cpbench.results.store import write_result

    write_result(make_record(recipe="base", set_size=2.0), d / "res_base")
    write_result(make_record(recipe="base", set_size=3.5), d / "res_cand")
    (d / "items_bad.json").write_text("[{")
    return d


G = "{d}/good.parquet"
AN = ["analyze", "--splits", "2"]

# (argv with {d} for the fixture directory, keyword the one-line message must contain)
CASES = [
    # cpbench analyze: files
    (AN + ["{d}/missing.parquet"], "no such file"),
    (AN + ["{d}/adir.parquet"], "no such file"),
    (AN + ["{d}/empty.parquet"], "not a readable Parquet file"),
    (AN + ["{d}/truncated.parquet"], "not a readable Parquet file"),
    (AN + ["{d}/json.parquet"], "not a readable Parquet file"),
    (AN + ["{d}/notes.txt"], "not a readable Parquet file"),
    (AN + ["{d}/nan.parquet"], "non-finite logits"),
    (AN + ["{d}/inf.parquet"], "non-finite logits"),
    (AN + ["{d}/label6.parquet"], "outside the 6 options"),
    (AN + ["{d}/dup.parquet"], "duplicate item id '3'"),
    (AN + ["{d}/noheader.parquet"], "not a cpbench logits artifact"),
    (AN + ["{d}/headerlist.parquet"], "corrupt cpbench header"),
    (AN + ["{d}/badhash.parquet"], "content hash mismatch"),
    (AN + ["{d}/m_mmlu_10k_base_icl0.pkl"], "--labels"),
    (AN + ["{d}/m_mmlu_10k_base_icl0.pkl", "--labels", "{d}/labels_shifted.json"], "id mismatch"),
    (AN + ["{d}/m_mmlu_10k_base_icl0.pkl", "--labels", "{d}/labels_G.json"], "label 'G'"),
    (AN + ["{d}/m_mmlu_10k_base_icl0.pkl", "--labels", "{d}/labels_bad.json"], "not valid JSON"),
    (AN + ["{d}/m_mmlu_10k_base_icl0.pkl", "--labels", "{d}/missing.json"], "no such file"),
    (AN + ["{d}/evil.pkl", "--labels", "{d}/labels_G.json"], "refusing to load"),
    (AN + ["{d}/bad.jsonl"], "bad.jsonl:1: not valid JSON"),
    # cpbench analyze: option values
    (AN + ["--alpha", "0", G], "alpha"),
    (AN + ["--alpha", "1", G], "alpha"),
    (AN + ["--alpha", "-0.1", G], "alpha"),
    (AN + ["--alpha", "abc", G], "--alpha"),
    (AN + ["--alpha", "nan", G], "alpha"),
    (["analyze", "--splits", "0", G], "splits"),
    (["analyze", "--splits", "x", G], "--splits"),
    (AN + ["--cal-ratio", "1.5", G], "cal_ratio"),
    (AN + ["--scores", "foo", G], "'foo'"),
    (AN + ["--protocol", "bogus", G], "unknown protocol"),
    (["analyze", "--protocol", "ye2024", "--splits", "5", G], "one split"),
    (AN + ["--out", "{d}/res_empty", G], "is a directory"),
    (AN + ["--out", "{d}/notes.txt/x.json", G], "cannot write"),
    (["analyze"], "Missing argument"),
    (AN + ["--bogus", G], "--bogus"),
    # cpbench leaderboard
    (["leaderboard", "{d}/missing", "-o", "{d}/lb", "--no-plots"], "no such results directory"),
    (["leaderboard", "{d}/res_empty", "-o", "{d}/lb", "--no-plots"], "no cpbench result records"),
    (["leaderboard", "{d}/res_foreign", "-o", "{d}/lb", "--no-plots"], "no cpbench result records"),
    (["leaderboard", "{d}/res_base", "-o", "{d}/notes.txt", "--no-plots"], "is a file"),
    (["leaderboard", "{d}/res_base", "-o", "{d}/lb", "--criterion", "foo", "--no-plots"], "--criterion"),
    (["leaderboard", "{d}/res_base", "-o", "{d}/lb", "--epsilon", "nan", "--no-plots"], "--epsilon"),
    (["leaderboard", "{d}/res_base", "-o", "{d}/lb", "--delta", "abc", "--no-plots"], "--delta"),
    # cpbench check
    (["check", "-b", "{d}/missing", "-c", "{d}/res_cand"], "--baseline"),
    (["check", "-b", "{d}/res_base", "-c", "{d}/res_empty"], "--candidate"),
    (["check", "-b", "{d}/res_base", "-c", "{d}/res_foreign"], "corrupted"),  # an unparseable .json: an error
    (["check", "-b", "{d}/res_base", "-c", "{d}/res_cand", "--min-coverage", "2"], "--min-coverage"),
    (["check", "-b", "{d}/res_base", "-c", "{d}/res_cand", "--max-set-size-increase", "nan"], "--max-set-size"),
    (["check", "-b", "{d}/res_base", "-c", "{d}/res_base", "--summary", "{d}/res_empty"], "is a directory"),
    (["check", "-b", "{d}/res_base"], "--candidate"),
    # cpbench tasks
    (["tasks", "show", "nosuch"], "unknown task 'nosuch'"),
    (["tasks", "show", "qa", "--item", "zzz"], "'zzz'"),
    (["tasks", "show", "qa", "--prompt", "bogus"], "prompt method"),
    (["tasks", "show", "qa", "--shots", "-1"], "--shots"),
    (["tasks", "show", "qa", "--shots", "99"], "99 shots"),
    (["tasks", "show", "qa", "--chat", "v9"], "--chat"),
    (["tasks", "show", "qa", "--data", "{d}/missing.json"], "no such file"),
    (["tasks", "show", "qa", "--data", "{d}/items_bad.json"], "malformed JSON"),
    (["tasks", "build", "qa", "--from", "samples", "--out", "{d}/items.txt"], "unknown item file type"),
    (["tasks", "build", "qa", "--from", "original", "--count", "0", "--out", "{d}/i.json"], "--count"),
    (["tasks", "bogus"], "No such command"),
    # cpbench run: failures found while planning, before any model is loaded
    (["run", "--model", "nosuchmodel"], "unknown model"),
    (["run", "--model", "smollm2-135m-instruct@pypi", "--quant", "nosuchrecipe"], "unknown recipe"),
    (["run", "--model", "smollm2-135m-instruct@pypi", "--tasks", "qa,zz"], "unknown task 'zz'"),
    (["run", "--model", "smollm2-135m-instruct@pypi", "--chat", "foo"], "chat"),
    (["run", "--model", "smollm2-135m-instruct@pypi", "--limit", "0"], "--limit"),
    (["run", "--model", "smollm2-135m-instruct@pypi", "--limit", "-1"], "--limit"),
    (["run", "--model", "smollm2-135m-instruct@pypi", "--shots", "x"], "--shots"),
    (["run", "--model", "smollm2-135m-instruct@pypi", "--alpha", "1.5"], "alpha"),
    (["run", "--model", "smollm2-135m-instruct@pypi", "--data", "{d}/missing.json"], "missing.json"),
    (["run", "--model", "smollm2-135m-instruct@pypi", "--results", "{d}/notes.txt"], "--results"),
    (["run", "--suite", "nosuch"], "unknown suite"),
    (["bogus"], "No such command"),
]


def _argv(args: list[str], d: Path) -> list[str]:
    return [a.format(d=d) for a in args]


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert len(lines) == 1, lines
    assert lines[0].startswith("cpbench: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("args,keyword", CASES, ids=[" ".join(a[:4]) + f" [{k}]" for a, k in CASES])
def test_bad_input_is_one_line_exit_2(fx, capsys, args, keyword):
    rc = main(_argv(args, fx))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert keyword in _one_error_line(err)


def test_good_input_still_works_and_gate_regression_exits_1(fx, capsys):
    assert main(_argv(AN + [G, "--json"], fx)) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["n"] == N
    # synthetic records without artifacts: the point-estimate mode (item-level mode would say inconclusive)
    assert main(_argv(["check", "-b", "{d}/res_base", "-c", "{d}/res_cand", "--decision", "point"], fx)) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert main(_argv(["check", "-b", "{d}/res_base", "-c", "{d}/res_base", "--decision", "point"], fx)) == 0


def test_failed_write_keeps_the_finished_result(fx, capsys):
    """--out to an unusable path fails with one line and leaves no partial file behind."""
    out = fx / "kept.json"
    assert main(_argv(AN + [G, "--out", str(out)], fx)) == 0
    before = out.read_bytes()
    assert main(_argv(AN + ["{d}/nan.parquet", "--out", str(out)], fx)) == 2
    assert out.read_bytes() == before
    assert not list(fx.glob(".kept.json.*"))
    capsys.readouterr()


@pytest.mark.parametrize("args", [[], ["tasks"], ["--version"], ["--help"], ["analyze", "--help"],
                                  ["tasks", "show", "--help"], ["run", "--help"], ["leaderboard", "--help"],
                                  ["check", "--help"]])
def test_help_and_version_render(capsys, args):
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert ("cpbench" in captured.out) or ("Usage" in captured.out)


def test_interrupt_is_one_line_exit_130(monkeypatch, capsys):
    import cpbench.results.conformal.protocols

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cpbench.results.conformal.protocols, "preset", interrupted)
    assert main(["analyze", "whatever.parquet"]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [err.strip()] and "interrupted" in err and "finished results are kept" in err


# ------------------------------------------------------------------- malformed registries and task definitions
BAD_YAML = {
    "list of mappings": "- {a: 1}\n",
    "scalar": "hello\n",
    "unclosed": "a: [1, 2\n",
    "not utf-8": b"\xff\xfe garbage",
}


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("text", list(BAD_YAML.values()) + ["models:\n  foo: bar\n", "models:\n  - foo\n"],
                         ids=list(BAD_YAML) + ["models as mapping", "models of strings"])
def test_bad_models_yaml(tmp_path, text):
    from cpbench.weights.models import load_registry

    with pytest.raises(CpbenchError, match="models.yaml"):
        load_registry(_write(tmp_path / "models.yaml", text))


@pytest.mark.parametrize("text", list(BAD_YAML.values()) + ["recipes:\n  - a\n", "recipes:\n  fp16: hi\n",
                                                             "sweeps:\n  - a\n"],
                         ids=list(BAD_YAML) + ["recipes as list", "recipe as string", "sweeps as list"])
def test_bad_recipes_yaml(tmp_path, text):
    from cpbench.specs.recipes import load_registry

    with pytest.raises(CpbenchError, match="recipes.yaml"):
        load_registry(_write(tmp_path / "recipes.yaml", text))


@pytest.mark.parametrize("text", list(BAD_YAML.values()) + ["suites:\n  default: hello\n"],
                         ids=list(BAD_YAML) + ["suite as string"])
def test_bad_suites_yaml(tmp_path, text):
    from cpbench.run.suites import load_suite

    with pytest.raises(CpbenchError, match="suites.yaml"):
        load_suite("default", _write(tmp_path / "suites.yaml", text))


@pytest.mark.parametrize("change", ["unknown key", "missing name", "not utf-8", "scalar"])
def test_bad_task_yaml(tmp_path, change):
    from cpbench.base.paths import data_dir
    from cpbench.specs.tasks.spec import load_task_file

    text = (data_dir("tasks") / "qa.yaml").read_text(encoding="utf-8")
    body: str | bytes = {
        "unknown key": text + "\nbogus_key: 1\n",
        "missing name": "\n".join(line for line in text.splitlines() if not line.startswith("name:")) + "\n",
        "not utf-8": b"\xff\xfe",
        "scalar": "hello\n",
    }[change]
    with pytest.raises(CpbenchError, match="qa.yaml") as info:
        load_task_file(_write(tmp_path / "qa.yaml", body))
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------- the console script, for real
@pytest.mark.parametrize("args,keyword", [
    (["analyze", "--alpha", "abc", G], "--alpha"),
    (AN + ["{d}/nan.parquet"], "non-finite"),
    (["check", "-b", "{d}/res_base", "-c", "{d}/res_cand", "--max-set-size-increase", "-1"], "--max-set-size"),
])
def test_subprocess(fx, args, keyword):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "cpbench", *_argv(args, fx)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 2, p.stderr
    assert keyword in _one_error_line(p.stderr)


def test_subprocess_bare_command_prints_help():
    p = subprocess.run([sys.executable, "-m", "cpbench"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "Traceback" not in p.stderr and "Usage" in p.stdout
