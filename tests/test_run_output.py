"""`cpbench run` output (issue 12): quiet by default, no line broken inside a path, cpbench's own progress lines when
stdout is not a terminal, a summary with intervals and verdicts, a run summary JSON, and the next command last."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cpbench.base import progress
from run_fixtures import tiny_dir  # noqa: F401  (pytest fixtures)

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# what third-party output looks like: loguru's format, tqdm bars, transformers' prefixed warnings, Python warnings
THIRD_PARTY = [
    re.compile(r"\| (DEBUG|INFO|WARNING|ERROR|METRIC) - "),
    re.compile(r"\d+%\|"),
    re.compile(r"it/s\]"),
    re.compile(r"^\[transformers\]"),
    re.compile(r"Warning:|warnings\.warn|UserWarning|FutureWarning"),
    re.compile(r"llmcompressor|compressed_tensors", re.IGNORECASE),
]


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CPBENCH_CACHE=str(cache), OMP_NUM_THREADS="1", COLUMNS="80", PYTHONPATH=str(REPO), **extra)
    env.pop("FORCE_COLOR", None)
    return env


@pytest.mark.slow  # a real subprocess run with a compression (~30 s); CI runs it
def test_small_run_output_is_quiet_unbroken_and_ends_with_next_step(tmp_path, tiny_dir):
    # A long results path: a console that hard-wraps at 80 or 120 columns would break it.
    results = tmp_path / ("results-" + "x" * 60) / ("nested-" + "y" * 60)
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "cpbench", "run", "--model", tiny_dir, "--quant", "rtn-4bit", "--data", "samples",
           "--tasks", "qa", "--limit", "18", "--results", str(results)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(cache), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    lines = out.splitlines()
    offending = [ln for ln in lines if any(p.search(ln) for p in THIRD_PARTY)]
    assert offending == [], offending[:5]
    assert proc.stderr.strip() == ""
    # cpbench's own progress, as plain lines (stdout is a pipe): scoring and compression report start and end
    assert any(ln.startswith("[base] score qa/base") and "done in" in ln for ln in lines)
    assert any(ln.startswith("[rtn-4bit] compress") and "done in" in ln for ln in lines)
    # no line broken inside a path: every path the run printed appears whole on one line
    summary_line = next(ln for ln in lines if ln.startswith("run summary: "))
    summary_path = Path(summary_line.removeprefix("run summary: "))
    assert summary_path.is_file() and str(results) in str(summary_path)
    ckpt_line = next(ln for ln in lines if "checkpoint written: " in ln)
    ckpt = re.search(r"checkpoint written: (\S+)", ckpt_line).group(1)
    assert Path(ckpt).is_dir()
    # the summary: Δ with an interval and a verdict for the compressed cell, and the next command last
    row = next(ln for ln in lines if re.match(r"\s*qa\s+base\s+rtn-4bit\s", ln))
    assert re.search(r"[+-]\d+\.\d \[[+-]\d+\.\d, [+-]\d+\.\d\]", row), row
    assert any(ln.strip().startswith("rtn-4bit: ") for ln in lines)
    # the leaderboard lands beside the run's results, never in the published leaderboards/
    assert lines[-1] == f"next: cpbench leaderboard {results} --out {results / 'leaderboards'}"
    # the run summary JSON holds what was printed
    summary = json.loads(summary_path.read_text())
    assert summary["schema"] == "cpbench.run/1"
    assert {c["recipe"] for c in summary["cells"]} == {"base", "rtn-4bit"}
    comp = [c for c in summary["comparisons"] if c["score"] == "lac"]
    assert len(comp) == 1 and comp[0]["category"] in row
    # third-party output went to the log file, not away: llm-compressor logged there
    log = Path(summary["files"]["third_party_log"])
    assert log.is_file()
    # the leaderboard still reads the results tree (the run summary is not mistaken for a record)
    from cpbench.results.store import load_results

    df, skipped = load_results(results)
    assert not skipped and set(df["recipe"]) == {"base", "rtn-4bit"}


@pytest.mark.slow
def test_verbose_shows_third_party_logs(tmp_path, tiny_dir):
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "cpbench", "run", "--model", tiny_dir, "--quant", "rtn-4bit", "--data", "samples",
           "--tasks", "qa", "--limit", "18", "--results", str(tmp_path / "r"), "-v"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(cache), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert any(p.search(ln) for p in THIRD_PARTY for ln in out.splitlines())


# ------------------------------------------------------------------------------------------- progress reporters
def test_line_reporter_prints_every_step_and_at_the_end():
    lines: list[str] = []
    rep = progress.LineReporter(lines.append, interval=3600, step=0.25)
    with rep.task("score", total=100, unit="item") as t:
        for _ in range(100):
            t.advance(1)
    assert lines[0] == "score: started (100 items)"
    middle = [ln for ln in lines[1:-1]]
    assert [re.search(r"(\d+)/100", ln).group(1) for ln in middle] == ["25", "50", "75"]
    assert "ETA" in middle[0] and "done in" in lines[-1] and "100/100" in lines[-1]


def test_line_reporter_heartbeat_for_a_silent_step():
    import time

    lines: list[str] = []
    rep = progress.LineReporter(lines.append, interval=0.2)
    with rep.task("compress", unit="layer"):
        time.sleep(0.5)
    # started, at least one heartbeat while nothing advanced, done
    assert lines[0] == "compress: started" and lines[-1].startswith("compress, done in")
    assert any("elapsed" in ln for ln in lines[1:-1])


def test_line_reporter_says_when_a_step_stopped():
    lines: list[str] = []
    with pytest.raises(RuntimeError):
        with progress.LineReporter(lines.append).task("score", total=10):
            raise RuntimeError("boom")
    assert lines[-1].startswith("score: stopped after")


def test_library_default_reporter_prints_nothing(capsys):
    with progress.current().task("x", total=3) as t:
        t.advance(3)
    assert capsys.readouterr() == ("", "")


def test_quiet_context_restores_logging_and_streams(tmp_path):
    import logging
    import warnings

    from cpbench.base.console import quiet_third_party

    before = logging.getLogger("transformers").level
    out, err = sys.stdout, sys.stderr
    with quiet_third_party(False, tmp_path / "log.txt") as log:
        print("to the log")
        warnings.warn("hidden warning")
        assert logging.getLogger("transformers").level == logging.ERROR
    assert sys.stdout is out and sys.stderr is err
    assert logging.getLogger("transformers").level == before
    assert log is not None and "to the log" in log.read_text()


def test_scoring_reports_progress_per_batch_not_per_chunk():
    """A cell smaller than one chunk still moves: the scorer's batches advance cpbench's progress."""
    from scoring_fixtures import make_prompts, tiny

    from cpbench.base.runkey import ScoreKey
    from cpbench.backends.pipeline import score_prompts

    model, tok = tiny()
    prompts = make_prompts(24, method="base", shots=0)
    lines: list[str] = []
    with progress.use(progress.LineReporter(lines.append, interval=3600, step=0.25)):
        score_prompts(model, tok, prompts, ScoreKey(model="tiny", task="qa"), batch_size=4, chunk_size=256,
                      resume=False)  # fmt: skip
    counts = [int(m.group(1)) for ln in lines if (m := re.search(r"(\d+)/24 items", ln))]
    assert counts[0] < 24 and counts[-1] == 24 and lines[-1].count("done in") == 1, lines
