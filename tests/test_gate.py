"""`cpbench check`: exit codes for pass, fail and bad input; the diff table, Markdown summary and JUnit XML."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from result_factory import make_record

from cpbench.cli import main
from cpbench.base.errors import CpbenchError
from cpbench.results.gate import Decision, Limits, run_gate
from cpbench.results.store import write_result


def _write(root: Path, *records: dict) -> Path:
    for rec in records:
        write_result(rec, root)
    return root


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    for task in ("qa", "rc"):
        _write(root,
               make_record("tiny", "base", task, acc=0.60, set_size=2.0, coverage=0.90, noise=0.01, seed=1),
               make_record("tiny", "mild", task, acc=0.595, set_size=2.1, coverage=0.90, noise=0.01, seed=2),
               make_record("tiny", "bad", task, acc=0.59, set_size=2.6, coverage=0.88, noise=0.01, seed=3))
    return root


POINT = ["--decision", "point"]  # these synthetic records have no logits artifacts: the point-estimate mode


def _check(tree: Path, candidate: str, *extra: str) -> int:
    return main(["check", "--baseline", str(tree / "tiny" / "base"), "--candidate", str(tree / "tiny" / candidate),
                 *POINT, *extra])


def test_pass_exits_0_and_prints_the_diff(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _check(tree, "mild") == 0
    out = capsys.readouterr().out
    assert out.startswith("cpbench check: PASS (pass 4, fail 0, missing 0, new 0)")
    assert "set-size increase <= 0.25 options" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("tiny") and " qa " in ln and " lac " in ln)
    assert "mild" in line and "base" in line and "+0.1" in line and line.rstrip().endswith("pass")


def test_set_size_regression_exits_1(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _check(tree, "bad") == 1
    out = capsys.readouterr().out
    assert "FAIL (pass 0, fail 4" in out and len(re.findall(r"set size \+0\.(59|60)\d > 0\.25", out)) == 4
    # a looser limit lets the same candidate through
    assert _check(tree, "bad", "--max-set-size-increase", "0.7") == 0


def test_coverage_and_accuracy_limits(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _check(tree, "bad", "--max-set-size-increase", "1", "--min-coverage", "0.89") == 1
    assert "coverage 0.88" in capsys.readouterr().out
    assert _check(tree, "mild", "--max-accuracy-drop", "0.001") == 1
    assert "accuracy drop 0.005" in capsys.readouterr().out
    assert _check(tree, "mild", "--max-accuracy-drop", "0.02", "--min-coverage", "0.85") == 0


def test_summary_and_junit(tree: Path, tmp_path: Path) -> None:
    summary, junit = tmp_path / "s" / "summary.md", tmp_path / "j" / "junit.xml"
    assert _check(tree, "bad", "--summary", str(summary), "--junit", str(junit)) == 1
    md = summary.read_text()
    assert md.startswith("### ❌ cpbench check: FAIL")
    assert md.count("| tiny | bad | base |") == 4
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "4" and suite.get("failures") == "4"
    failures = suite.findall("testcase/failure")
    assert len(failures) == 4 and all(re.fullmatch(r"set size \+0\.(59|60)\d > 0\.25", f.get("message", ""))
                                      for f in failures)
    assert _check(tree, "mild", "--summary", str(summary), "--junit", str(junit)) == 0
    assert summary.read_text().startswith("### ✅ cpbench check: PASS")
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("failures") == "0" and not suite.findall("testcase/failure")


def test_missing_candidate_cell_fails_unless_allowed(tree: Path, tmp_path: Path) -> None:
    cand = _write(tmp_path / "cand", make_record("tiny", "mild", "qa", acc=0.595, set_size=2.1))
    args = ["check", "--baseline", str(tree / "tiny" / "base"), "--candidate", str(cand), *POINT]
    assert main(args) == 1
    assert main([*args, "--allow-missing"]) == 0


def test_matching_by_recipe_when_baseline_holds_several(tree: Path, tmp_path: Path) -> None:
    """main-branch tree vs a PR tree: each recipe is compared with itself."""
    pr = _write(tmp_path / "pr",
                *(make_record("tiny", r, t, acc=0.6, set_size=ss, coverage=0.9, noise=0.01, seed=s)
                  for t in ("qa", "rc") for r, ss, s in (("base", 2.0, 1), ("mild", 2.1, 2), ("bad", 2.6, 3))))
    report = run_gate(tree, pr, Limits(), Decision(mode="point"))
    compared = report.rows[report.rows["status"].isin(["pass", "fail"])]
    assert len(compared) == 12 and (compared["recipe"] == compared["baseline_recipe"]).all()
    assert report.exit_code == 0
    worse = _write(tmp_path / "worse", *(make_record("tiny", "mild", t, set_size=2.5) for t in ("qa", "rc")))
    report = run_gate(tree, worse, Limits(allow_missing=True), Decision(mode="point"))
    assert set(report.rows.query("status == 'fail'")["recipe"]) == {"mild"} and report.exit_code == 1


def test_bad_input_exits_2(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = str(tree / "tiny" / "base")
    assert main(["check", "--baseline", base, "--candidate", str(tmp_path / "absent")]) == 2
    assert "no such file" in capsys.readouterr().err
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.json").write_text("{\"schema\": \"something/else\"}")
    assert main(["check", "--baseline", base, "--candidate", str(junk)]) == 2
    assert "no cpbench result records" in capsys.readouterr().err
    other_task = _write(tmp_path / "other", make_record("tiny", "q", "ci"))
    assert main(["check", "--baseline", base, "--candidate", str(other_task)]) == 2
    assert "no candidate result matches" in capsys.readouterr().err
    other_items = _write(tmp_path / "items", *(make_record("tiny", "q", t, n=500) for t in ("qa", "rc")))
    assert main(["check", "--baseline", base, "--candidate", str(other_items)]) == 2
    assert "item sets differ" in capsys.readouterr().err
    assert main(["check", "--baseline", base, "--candidate", str(tree / "tiny" / "mild"),
                 "--min-coverage", "1.5"]) == 2
    with pytest.raises(CpbenchError):
        Limits(max_set_size_increase=-1)


def test_sample_data_is_labelled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = _write(tmp_path / "b", make_record("tiny", "base", "qa", sample_data=True))
    c = _write(tmp_path / "c", make_record("tiny", "q", "qa", sample_data=True))
    assert main(["check", "--baseline", str(b), "--candidate", str(c), *POINT]) == 0
    assert "sample data" in capsys.readouterr().out


def test_console_script_exit_codes(tree: Path) -> None:
    """The installed `cpbench` entry point maps the outcome to the process exit status."""
    exe = [sys.executable, "-m", "cpbench"]
    base = ["check", "--baseline", str(tree / "tiny" / "base")]
    runs = {
        0: [*base, "--candidate", str(tree / "tiny" / "mild"), *POINT],
        1: [*base, "--candidate", str(tree / "tiny" / "bad"), *POINT],
        2: [*base, "--candidate", str(tree / "nowhere")],
    }
    for expected, args in runs.items():
        proc = subprocess.run([*exe, *args], capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == expected, (args, proc.stdout[-500:], proc.stderr[-500:])


def test_gate_on_records_from_cpbench_analyze(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Real records: the same items scored by a baseline and by a noisier 'compressed' model, analysed and gated."""
    import numpy as np

    analyze = pytest.importorskip("cpbench.results.conformal.protocols")
    from cpbench.results.artifact import LogitsArtifact
    from cpbench.base.runkey import AnalysisKey, ScoreKey

    rng = np.random.default_rng(1)
    n = 400
    labels = rng.integers(0, 6, n)
    signal = rng.normal(0, 1, (n, 6))
    signal[np.arange(n), labels] += 2.0
    for recipe, noise in (("base", 0.0), ("gptq-8bit", 0.05), ("gptq-2bit", 2.5)):
        key = ScoreKey(model="tiny", recipe=recipe, task="qa")
        art = LogitsArtifact(ids=[f"q{i}" for i in range(n)], labels=labels,
                             logits=(signal + noise * rng.normal(0, 1, (n, 6))).astype(np.float32),
                             letters=list("ABCDEF"), provenance={"run_key": key.model_dump()})
        write_result(analyze.analyze_artifact(art, AnalysisKey(splits=20), ["lac", "aps"]), tmp_path / "results")
    base = str(tmp_path / "results" / "tiny" / "base")
    assert main(["check", "--baseline", base, "--candidate", str(tmp_path / "results" / "tiny" / "gptq-8bit"),
                 *POINT]) == 0
    assert main(["check", "--baseline", base, "--candidate", str(tmp_path / "results" / "tiny" / "gptq-2bit"),
                 *POINT]) == 1
    out = capsys.readouterr().out
    assert "FAIL (pass 0, fail 2" in out and "[+" in out  # paired interval over the 20 shared splits


def test_change_exactly_at_each_limit_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Deltas are float differences (0.80 - 0.81 = -0.010000000000000009, 2.1 - 2.0 = 0.10000000000000009): a change
    exactly at a limit passes, one just beyond fails."""
    root = tmp_path / "results"
    _write(root,
           make_record("tiny", "base", "qa", acc=0.81, set_size=2.0, coverage=0.90),
           make_record("tiny", "edge", "qa", acc=0.80, set_size=2.1, coverage=0.90),
           make_record("tiny", "over", "qa", acc=0.7999, set_size=2.1001, coverage=0.8999))
    limits = ["--max-set-size-increase", "0.1", "--max-accuracy-drop", "0.01", "--min-coverage", "0.9"]
    assert main(["check", "--baseline", str(root / "tiny" / "base"), "--candidate", str(root / "tiny" / "edge"),
                 *limits, *POINT]) == 0
    assert main(["check", "--baseline", str(root / "tiny" / "base"), "--candidate", str(root / "tiny" / "over"),
                 *limits, *POINT]) == 1
    out = capsys.readouterr().out
    assert "set size +0.100 > 0.1" in out and "accuracy drop 0.0101 > 0.01" in out and "coverage 0.8999 < 0.9" in out


def test_reasons_show_the_one_sided_level_that_decided_each_check() -> None:
    """Holm decides the j-th smallest of m p-values at alpha / (m - j + 1): a failing check's printed bound is the bound
    at that level, and it lies beyond the limit (issue 15: 'accuracy drop 0.0917 > 0.02 (bound 0.0172)' showed a
    Bonferroni bound beside a Holm decision)."""
    from cpbench.results.analysis.decisions import Directional, decision_levels
    from cpbench.results.analysis.estimate import Estimate
    from cpbench.results.gate import Decision, _Check, _decide

    # five checks: one clear failure, one near the limit, three clear passes
    ests = [Estimate("d", 0.0917, 0.030, n=500), Estimate("d", 0.0, 0.001, n=500), Estimate("d", 0.0, 0.001, n=500),
            Estimate("d", 0.0, 0.001, n=500), Estimate("d", 0.0300, 0.012, n=500)]
    checks = [_Check(i, "accuracy drop", Directional.test(e, 0.02), True, ".4f") for i, e in enumerate(ests)]
    rows = [{"status": "pass", "reasons": ""} for _ in ests]
    _decide(rows, checks, Decision())
    assert rows[0]["status"] == "fail"
    levels = decision_levels([c.test.p for c in checks], 0.05, "holm")
    lvl = levels[0]
    assert "one-sided" in rows[0]["reasons"] and f"{100 * lvl:.2f}".rstrip("0").rstrip(".") + "%" in rows[0]["reasons"]
    bound = float(rows[0]["reasons"].split("lower bound ")[1].rstrip(")"))
    assert bound > 0.02  # the bound shown is beyond the limit: it shows the break
    assert bound == pytest.approx(ests[0].bound("lower", lvl), abs=1e-4)
    # Holm's levels: 1 - alpha / m for the smallest p-value, then 1 - alpha / (m - 1), ...
    assert sorted(levels)[-1] == pytest.approx(1 - 0.05 / 5) and min(levels) == pytest.approx(0.95)
    assert rows[4]["status"] == "inconclusive" and "more items (" in rows[4]["reasons"]
    # from the cell's own variance: n ((z_level + z_0.8) se / gap)^2 in all
    from cpbench.results.analysis.estimate import z_of

    need = 500 * ((z_of(levels[4]) + z_of(0.8)) * 0.012 / 0.01) ** 2
    assert f"{int(round(need, -2)):,}" in rows[4]["reasons"] or f"{int(round(need, -1)):,}" in rows[4]["reasons"]
