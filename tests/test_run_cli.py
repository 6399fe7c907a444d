"""`cpbench run`: option handling, errors, and end-to-end runs on the tiny random model (compress -> score ->
analyze -> store), including a kill mid-scoring and a resume that recomputes only the unfinished chunks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from cpbench.cli import main
from run_fixtures import cache, tiny_dir  # noqa: F401  (pytest fixtures)

TESTS = Path(__file__).resolve().parent


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, no traceback
    return err[0]


# --------------------------------------------------------------------------------------------- errors and options
def test_unknown_model_alias_suggests_and_exits_2(capsys):
    assert main(["run", "--model", "lama-3.1-8b", "--quant", "gptq-4bit"]) == 2
    line = _err_line(capsys)
    assert line.startswith("cpbench: error: unknown model 'lama-3.1-8b'") and "did you mean" in line
    assert "llama-3.1-8b" in line


def test_cuda_without_cuda_is_one_line_error(capsys, tiny_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available on this machine")
    assert main(["run", "--model", tiny_dir, "--device", "cuda", "--data", "samples", "--tasks", "qa"]) == 2
    assert "CUDA" in _err_line(capsys)


def test_unknown_task_and_recipe_are_one_line_errors(capsys, tiny_dir):
    assert main(["run", "--model", tiny_dir, "--tasks", "qa,rcc", "--data", "samples"]) == 2
    assert "did you mean 'rc'" in _err_line(capsys)
    assert main(["run", "--model", tiny_dir, "--quant", "gptx-4bit", "--data", "samples"]) == 2
    assert "did you mean 'gptq-4bit'" in _err_line(capsys)


def test_too_few_items_fail_before_any_work(capsys, tiny_dir, cache):
    assert main(["run", "--model", tiny_dir, "--data", "samples", "--tasks", "qa", "--limit", "10"]) == 2
    assert "--limit 18" in _err_line(capsys)
    assert not (cache / "checkpoints").exists()


def test_gpu_recipe_named_on_cpu_is_an_error(capsys, tiny_dir, cache):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available on this machine")
    assert main(["run", "--model", tiny_dir, "--quant", "bnb-nf4", "--device", "cpu", "--data", "samples",
                 "--tasks", "qa", "--results", str(cache / "r")]) == 2  # fmt: skip
    line = _err_line(capsys)
    assert "bnb-nf4" in line and "cuda" in line.lower()


def test_plan_defaults_come_from_the_suite():
    from cpbench.run.plan import plan_from_options
    from cpbench.run.suites import load_suite

    suite = load_suite("default")
    plan = plan_from_options()
    assert plan.suite == "default" and plan.model == suite.model and list(plan.tasks) == list(suite.tasks)
    assert plan.recipes[0] == "base" and list(plan.recipes) == list(dict.fromkeys(suite.recipes))
    assert not plan.strict_recipes
    # --quant replaces the suite's recipes (baseline kept first), other options override single fields.
    plan = plan_from_options(quant=["rtn-4bit"], limit=20, scoring="letter")
    assert list(plan.recipes) == ["base", "rtn-4bit"] and plan.limit == 20 and plan.scoring == "letter"
    assert plan.model == suite.model and plan.strict_recipes


def test_plan_with_model_uses_benchmark_defaults(tiny_dir):
    from cpbench.run.plan import plan_from_options
    from cpbench.specs.tasks import list_tasks

    plan = plan_from_options(model=tiny_dir, quant=["gptq-{8,4}bit"], prompts=["base", "task"])
    assert plan.suite is None and plan.data == "prepared" and plan.scoring == "letter"
    assert list(plan.tasks) == list_tasks() and list(plan.prompts) == ["base", "task"]
    assert list(plan.recipes) == ["base", "gptq-8bit", "gptq-4bit"]


# --------------------------------------------------------------------------------------------- end to end (tiny)
def test_run_end_to_end_on_the_tiny_model(tmp_path, cache, tiny_dir, capsys):
    from cpbench.results.artifact import LogitsArtifact
    from cpbench.results.store import load_results

    results = tmp_path / "results"
    args = ["run", "--model", tiny_dir, "--quant", "magnitude-50", "--tasks", "qa,rc", "--data", "samples",
            "--limit", "18", "--results", str(results), "--batch-size", "4"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "magnitude-50" in out and "Δacc" in out and "s/item" in out

    df, skipped = load_results(results)
    records = df[df["score"] == "lac"]
    assert sorted(set(zip(records["recipe"], records["task"]))) == [
        ("base", "qa"), ("base", "rc"), ("magnitude-50", "qa"), ("magnitude-50", "rc")
    ]  # fmt: skip
    assert all("not a .json file" in s.reason for s in skipped)  # only the artifacts beside the records
    arts = {p.parent.parent.name + "/" + p.name.split("__")[2]: LogitsArtifact.load(p)
            for p in results.rglob("artifacts/*.parquet")}  # fmt: skip
    assert set(arts) == {"base/qa", "base/rc", "magnitude-50/qa", "magnitude-50/rc"}
    base, pruned = arts["base/qa"], arts["magnitude-50/qa"]
    assert base.n == 18 and base.ids == pruned.ids
    assert np.abs(base.logits - pruned.logits).max() > 1e-3  # the compressed model really is another model
    prov = pruned.provenance
    assert prov["recipe"]["name"] == "magnitude-50" and prov["compression_report"]["recipe"]["name"] == "magnitude-50"
    assert prov["weights_id"].startswith("checkpoint:") and prov["sample_data"] is True
    assert base.provenance["model_source"] == "local" and base.provenance["compression_report"]["kind"] == "baseline"

    # The baseline artifact equals scoring the same prompts directly.
    from scoring_fixtures import reference_letter_logits, tiny

    from cpbench.specs.tasks import build_prompts, load_items, load_task

    spec = load_task("qa")
    prompts = build_prompts(spec, load_items(spec, "samples"))[:18]
    model, tok = tiny()
    ref = reference_letter_logits(model, tok, prompts, base.provenance["option_token_ids"]["ids"])
    assert np.abs(base.logits - ref).max() < 1e-4

    # A rerun reuses every artifact (nothing loaded or scored); --force rescoring gives the same numbers.
    stamps = {p: p.stat().st_mtime_ns for p in results.rglob("*.parquet")}
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("artifact reused") == 4 and "model loaded" not in out
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*.parquet")} == stamps
    assert main(args + ["--force"]) == 0
    again = LogitsArtifact.load(next(results.rglob("artifacts/*base__qa*.parquet")))
    assert np.abs(again.logits - base.logits).max() < 1e-5


_CHILD = textwrap.dedent(
    """
    import sys, time
    from cpbench.backends import letter
    real = letter.LetterScorer._batch
    def slow(self, idx, g):
        time.sleep(0.3)  # slow enough to be killed between chunks
        return real(self, idx, g)
    letter.LetterScorer._batch = slow
    from cpbench.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_killed_run_recomputes_only_the_unfinished_chunks(tmp_path, cache, tiny_dir, monkeypatch, capsys):
    from cpbench.results.artifact import LogitsArtifact
    from cpbench.backends import letter

    results = tmp_path / "results"
    args = ["run", "--model", tiny_dir, "--quant", "base", "--tasks", "qa", "--data", "samples", "--limit", "20",
            "--batch-size", "2", "--chunk-size", "4", "--results", str(results)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CPBENCH_CACHE=str(cache))
    child = subprocess.Popen([sys.executable, "-c", _CHILD, *args], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 180
    try:
        while not list(cache.glob("scores/*/chunk-00000.npz")):
            if child.poll() is not None:
                raise AssertionError(f"child exited early: {child.stderr.read().decode()[-2000:]}")
            assert time.monotonic() < deadline, "no chunk flushed within 180 s"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
        child.stderr.close()
    done = len(list(cache.glob("scores/*/chunk-*.npz")))
    assert 1 <= done < 5 and not list(results.rglob("*.parquet"))

    scored: list[int] = []
    real = letter.LetterScorer.__call__

    def counting(self, indices):
        scored.append(len(indices))
        return real(self, indices)

    monkeypatch.setattr(letter.LetterScorer, "__call__", counting)
    assert main(args) == 0
    assert sum(scored) == 20 - 4 * done  # only the chunks the killed run had not flushed
    resumed = LogitsArtifact.load(next(results.rglob("artifacts/*.parquet")))
    assert resumed.provenance["scoring_detail"]["chunks_loaded"] == done
    assert not list(cache.glob("scores/*/chunk-*.npz"))  # cleared once the artifact is written

    fresh_dir = tmp_path / "fresh"
    assert main(args[:-1] + [str(fresh_dir)]) == 0
    fresh = LogitsArtifact.load(next(fresh_dir.rglob("artifacts/*.parquet")))
    assert fresh.ids == resumed.ids and np.abs(fresh.logits - resumed.logits).max() < 1e-5


def test_first_run_of_a_hub_model_pins_the_commit_and_is_reused(tmp_path, monkeypatch, capsys):
    """The hub snapshot appears during the first run (download). The artifacts must record the commit it resolved
    to, and the rerun must reuse them instead of rescoring because "main" became a commit in the weights id."""
    import shutil

    import huggingface_hub.constants as hub_constants

    from cpbench.weights import models
    from cpbench.results.artifact import LogitsArtifact
    from tiny_model import tiny_model_dir

    hub, sha = tmp_path / "hub", "d" * 40
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(hub))
    real = models.load_tokenizer

    def downloading(entry, **kw):  # offline stand-in for the download that from_pretrained does
        snap = hub / "models--cpbtest--tiny" / "snapshots" / sha
        if not snap.is_dir():
            shutil.copytree(tiny_model_dir(), snap)
            (snap.parent.parent / "refs").mkdir()
            (snap.parent.parent / "refs" / "main").write_text(sha)
        return real(entry, **kw)

    monkeypatch.setattr(models, "load_tokenizer", downloading)
    monkeypatch.setattr("cpbench.weights.hub.offline_reason", lambda *a, **k: "")  # the stand-in plays an online hub
    args = ["run", "--model", "cpbtest/tiny", "--tasks", "qa", "--data", "samples", "--limit", "18",
            "--results", str(tmp_path / "results")]  # fmt: skip
    assert main(args) == 0
    (path,) = (tmp_path / "results").rglob("artifacts/*.parquet")
    prov = LogitsArtifact.load(path).provenance
    assert prov["model_source"] == "hub" and prov["model_commit"] == sha and prov["weights_id"].endswith("@" + sha)
    capsys.readouterr()
    assert main(args) == 0
    assert "artifact reused" in capsys.readouterr().out
