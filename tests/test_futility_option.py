"""The futility level of the sequential gate as an option (`cpbench run --until-decided --futility LEVEL`,
`cpbench check --until-decided --futility`, `cpbench.evaluate(futility=)`): bad levels are one line and exit 2, the
plan carries the level to the design, and a stored design replays with its own level (0: never a futility stop)."""

from __future__ import annotations

import math

import pytest
from run_fixtures import cache, tiny_dir  # noqa: F401  (pytest fixtures)

from cpbench.base.errors import CpbenchError
from cpbench.cli import main
from cpbench.results.analysis.sequential import DEFAULT_FUTILITY, Design, SequentialGate, futility_level


@pytest.mark.parametrize("bad", [-0.01, 0.5, 0.7, math.nan, math.inf, "x", True])
def test_futility_level_refuses_bad_values(bad) -> None:
    with pytest.raises(CpbenchError, match=r"--futility must be"):
        futility_level(bad)


def test_futility_level_accepts_the_range() -> None:
    assert futility_level(None) == DEFAULT_FUTILITY == 0.05
    assert futility_level(0) == 0.0 and futility_level("0.1") == 0.1 and futility_level(0.4999) == 0.4999


def _run_args(tiny_dir, *extra):  # noqa: F811
    return ["run", "--model", tiny_dir, "--quant", "magnitude-50", "--tasks", "qa", "--data", "samples",
            "--results", "res", "--until-decided", "--max-items", "27", "--first-look", "20", *extra]  # fmt: skip


@pytest.mark.parametrize("bad", ["-0.1", "0.5", "nan", "1"])
def test_run_bad_futility_is_one_line_and_exit_2(tiny_dir, capsys, monkeypatch, bad):  # noqa: F811
    from cpbench.run import seqrun

    def never(*a, **k):  # the level is refused while planning, before anything is scored
        raise AssertionError("scored with a bad --futility")

    monkeypatch.setattr(seqrun, "run_until_decided", never)
    assert main(_run_args(tiny_dir, f"--futility={bad}")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--futility must be in [0, 0.5)" in err and bad in err


def test_run_futility_without_until_decided_is_refused(tiny_dir, capsys):  # noqa: F811
    assert main(["run", "--model", tiny_dir, "--tasks", "qa", "--data", "samples", "--futility", "0.1"]) == 2
    assert "apply to --until-decided" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["-0.1", "0.5", "nan"])
def test_check_bad_futility_is_one_line_and_exit_2(tmp_path, capsys, bad):
    rc = main(["check", "--baseline", str(tmp_path / "b"), "--candidate", str(tmp_path / "c"), "--until-decided",
               f"--futility={bad}"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--futility must be in [0, 0.5)" in err
    assert main(["check", "--baseline", str(tmp_path / "b"), "--candidate", str(tmp_path / "c"), "--futility",
                 "0.1"]) == 2  # fmt: skip
    assert "apply to --until-decided" in capsys.readouterr().err


def test_plan_carries_the_level(tiny_dir):  # noqa: F811
    from cpbench.run.plan import plan_from_options

    kw = {"model": tiny_dir, "tasks": ["qa"], "data": "samples", "until_decided": True, "max_items": 27}
    assert plan_from_options(**kw).futility == DEFAULT_FUTILITY
    assert plan_from_options(**kw, futility=0).futility == 0.0
    assert plan_from_options(**kw, futility=0.2).futility == 0.2
    with pytest.raises(CpbenchError, match="--futility must be"):
        plan_from_options(**kw, futility=float("nan"))
    with pytest.raises(CpbenchError, match="apply to --until-decided"):
        plan_from_options(model=tiny_dir, tasks=["qa"], data="samples", futility=0.1)


def test_evaluate_refuses_bad_futility(tiny_dir):  # noqa: F811
    import cpbench

    with pytest.raises(CpbenchError, match="futility= applies to until_decided"):
        cpbench.evaluate(base=tiny_dir, tasks=["qa"], data="samples", futility=0.1)
    with pytest.raises(CpbenchError, match="--futility must be"):
        cpbench.evaluate(base=tiny_dir, tasks=["qa"], data="samples", results="res", until_decided=True,
                         futility=-0.2)  # fmt: skip


def _stored(futility: float | None) -> dict:
    from cpbench.results.gate import Decision, Limits
    from cpbench.run.seqrun import design_block

    block = design_block(Design.of(3000, futility=futility or 0.0), 200, 0, Limits(), Decision())
    if futility is None:  # a design stored before the futility stop
        del block["futility"]
    return block


def test_check_design_replays_the_stored_level_and_refuses_another(monkeypatch):
    """check_design rebuilds the run's design with its stored level (missing: 0, results before the futility stop);
    a --futility that disagrees is refused; with level 0 no evidence of a regression ever stops a cell."""
    from cpbench.results.gate import Decision, Limits
    from cpbench.run import seqrun

    for stored, want in ((0.0, 0.0), (0.1, 0.1), (None, 0.0)):
        block = _stored(stored)
        monkeypatch.setattr(seqrun, "stored_design", lambda _c, b=block: b)
        design, _, _ = seqrun.check_design("cand", {}, Limits(), Decision())
        assert design.futility == want
        design, _, _ = seqrun.check_design("cand", {"futility": want}, Limits(), Decision())  # agrees: fine
        assert design.futility == want
        with pytest.raises(CpbenchError, match=r"--futility 0.3 differs from the run's"):
            seqrun.check_design("cand", {"futility": 0.3}, Limits(), Decision())

    monkeypatch.setattr(seqrun, "stored_design", lambda _c: _stored(0.0))
    design, _, _ = seqrun.check_design("cand", {}, Limits(), Decision())
    assert "futility" not in design.describe() and math.isinf(design.futility_bound(0))
    g = SequentialGate.start(design, [("c", "set size")])
    for n in design.looks:  # overwhelming evidence of a regression, none of being beyond the limit: never futile
        g.look(n, {("c", "set size"): 0.0}, {("c", "set size"): 50.0})
    assert g.cell_status("c") == "continue"
    assert all(h.status != "futile" for h in g.hyps.values())

    monkeypatch.setattr(seqrun, "stored_design", lambda _c: _stored(0.05))  # the same evidence, level 0.05: stops
    design, _, _ = seqrun.check_design("cand", {}, Limits(), Decision())
    g = SequentialGate.start(design, [("c", "set size")])
    g.look(design.looks[0], {("c", "set size"): 0.0}, {("c", "set size"): 50.0})
    assert g.cell_status("c") == "fail"


def test_legacy_results_take_the_level_from_the_flag(monkeypatch):
    from cpbench.results.gate import Decision, Limits
    from cpbench.run import seqrun

    monkeypatch.setattr(seqrun, "stored_design", lambda _c: None)
    design, _, _ = seqrun.check_design("cand", {"max_items": 3000}, Limits(), Decision())
    assert design.futility == 0.0  # predate the futility stop: replayed without it
    design, _, _ = seqrun.check_design("cand", {"max_items": 3000, "futility": 0.1}, Limits(), Decision())
    assert design.futility == 0.1
