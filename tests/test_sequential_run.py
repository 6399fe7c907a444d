"""`cpbench run --until-decided` on the tiny model: staged scoring reuses every scored item (a second run scores
nothing), records land at the items that decided each cell, and `cpbench check --until-decided` on the finished
results gives the run's verdict."""

from __future__ import annotations

import json

from cpbench.cli import main
from run_fixtures import cache, tiny_dir  # noqa: F401  (pytest fixtures)


def _run(tiny_dir, results, *extra):
    return main(["run", "--model", tiny_dir, "--quant", "magnitude-50", "--tasks", "qa", "--data", "samples",
                 "--results", str(results), "--batch-size", "4", "--until-decided", "--max-items", "27",
                 "--first-look", "20", "--splits", "20", *extra])  # fmt: skip


def test_until_decided_resumes_and_check_agrees(tmp_path, cache, tiny_dir, capsys, monkeypatch):
    from cpbench.backends import pipeline as score_mod
    from cpbench.results.store import load_results

    scored = {"items": 0}
    real = score_mod.score_with

    def counting(backend, handle, prompts, key, **kw):
        scored["items"] += len(prompts)
        return real(backend, handle, prompts, key, **kw)

    monkeypatch.setattr(score_mod, "score_with", counting)
    results = tmp_path / "results"
    rc = _run(tiny_dir, results)
    cap = capsys.readouterr()
    out = cap.out
    assert rc == 0, cap.err[-3000:]
    assert "sequential look 1/2 at 20 items" in out
    first = scored["items"]
    # each item of each cell scored at most once: baseline + candidate, 30 items at most each
    assert 0 < first <= 2 * 27
    summary = json.loads(max(results.rglob("run-*.json")).read_text())
    seq = summary["sequential"]
    assert seq["design"]["looks"] == [20, 27]
    (cell,) = seq["cells"]
    assert cell["status"] in ("pass", "fail", "inconclusive")
    n_final = cell["items"] or 27
    df, _ = load_results(results)
    assert set(df["limit"].astype(int)) == {n_final} and df["data"].str.contains("~seq0").all()
    arts = sorted(results.rglob("artifacts/*.parquet"))
    assert len(arts) == 2  # stage artifacts no record uses are removed (prefixes of the kept ones)

    # a second run reuses every scored item
    scored["items"] = 0
    assert _run(tiny_dir, results) == 0
    assert scored["items"] == 0
    capsys.readouterr()

    # the design travels with the records; the candidate's says how many looks and items decided its cell
    blocks = {p.parent.name: json.loads(p.read_text())["provenance"]["extra"]["sequential"]
              for p in results.rglob("*.json") if p.parent.name in ("base", "magnitude-50")}  # fmt: skip
    assert blocks["base"]["role"] == "baseline" and "cell" not in blocks["base"]
    stored = blocks["magnitude-50"]
    assert stored["looks"] == [20, 27] and stored["max_items"] == 27 and stored["first_look"] == 20
    assert stored["spending"] == "pocock" and stored["order_seed"] == 0
    assert stored["futility"] == 0.05  # the default level (--futility not given)
    assert stored["limits"]["max_set_size_increase"] == 0.25
    assert stored["cell"]["status"] == cell["status"] and stored["cell"]["items"] == n_final
    assert stored["cell"]["looks"] == (cell["looks"] or 2)

    # check on the finished results replays the looks with the stored design (no flags): the run's verdict
    model_dir = next(p for p in results.iterdir() if p.is_dir())
    check = ["check", "--baseline", str(model_dir / "base"), "--candidate", str(model_dir / "magnitude-50"),
             "--until-decided", "--on-inconclusive", "warn"]  # fmt: skip
    rc = main(check)
    cap = capsys.readouterr()
    status = cell["status"]
    # one cell: check exits 1 unless it passes (an undecided cell, the only one, never passes: "no cell decided")
    assert (rc == 1) == (status != "pass"), cap.out + cap.err
    assert status in cap.out and "looks at 20, 27 items" in cap.err
    assert main([*check, "--max-items", "27", "--first-look", "20"]) == rc  # flags that agree are fine
    capsys.readouterr()
    # a flag that disagrees with the stored design: one line, exit 2
    assert main([*check, "--spending", "obf"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--spending obf differs from the run's pocock" in err and len(err.splitlines()) == 1
    assert main([*check, "--max-set-size-increase", "0.5"]) == 2
    assert "--max-set-size-increase 0.5 differs" in capsys.readouterr().err


def test_futility_flag_reaches_the_stored_design_and_check_replays_it(tmp_path, cache, tiny_dir, capsys):  # noqa: F811
    """`--futility 0` is stored with the design (the default run stores 0.05, see above); `cpbench check
    --until-decided` replays with the stored level (no futility stop in its design line) and refuses a --futility
    that disagrees with it (one line, exit 2)."""
    results = tmp_path / "results"
    rc = _run(tiny_dir, results, "--futility", "0")
    cap = capsys.readouterr()
    assert rc == 0, cap.err[-3000:]
    assert "futility stop" not in cap.out  # the run's design line: no futility stop at level 0
    summary = json.loads(max(results.rglob("run-*.json")).read_text())
    assert summary["sequential"]["stored"]["futility"] == 0.0
    blocks = [json.loads(p.read_text())["provenance"]["extra"]["sequential"] for p in results.rglob("*.json")
              if p.parent.name in ("base", "magnitude-50")]  # fmt: skip
    assert len(blocks) == 2 and all(b["futility"] == 0.0 for b in blocks)
    (cell,) = summary["sequential"]["cells"]
    assert all(c["status"] != "futile" for c in cell.get("checks", []))

    model_dir = next(p for p in results.iterdir() if p.is_dir())
    check = ["check", "--baseline", str(model_dir / "base"), "--candidate", str(model_dir / "magnitude-50"),
             "--until-decided", "--on-inconclusive", "warn"]  # fmt: skip
    rc = main(check)
    cap = capsys.readouterr()
    assert (rc == 1) == (cell["status"] != "pass") and "futility" not in cap.err and "futility" not in cap.out
    assert main([*check, "--futility", "0"]) == rc  # agrees with the stored level
    capsys.readouterr()
    assert main([*check, "--futility", "0.05"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--futility 0.05 differs from the run's 0.0" in err and len(err.splitlines()) == 1
