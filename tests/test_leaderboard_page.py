"""Leaderboard page pieces without a browser (issue 12): ties read as ties, tasks in benchmark order, empty analyses
collapse to one line saying why."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cpbench.results.analysis.aggregate import task_order
from cpbench.results.analysis.decoupling import _ranked
from cpbench.results.leaderboard.html import _empty_reason
from cpbench.results.leaderboard.tables import Table


def test_equal_values_are_shown_as_ties():
    names = ["a", "b", "c"]
    assert _ranked(names, np.array([0.5, 0.7, 0.5]), True, ">") == "b > a = c"
    assert _ranked(names, np.array([2.0, 1.0, 3.0]), False, "<") == "b < a < c"


def test_tasks_follow_the_benchmark_order():
    df = pd.DataFrame({"task": ["ds", "avg", "ci", "qa", "drs", "rc", "zz"]})
    assert task_order(df) == ["qa", "rc", "ci", "drs", "ds", "zz", "avg"]


def _table(name: str, rows: list[dict]) -> Table:
    d = pd.DataFrame(rows)
    return Table(name=name, title=name, display=d, data=d, provenance="")


def test_empty_analyses_say_why():
    assert "too few levels" in _empty_reason(_table("thresholds", [{"Verdict": "too-few-levels"}] * 3))
    assert _empty_reason(_table("thresholds", [{"Verdict": "too-few-levels"}, {"Verdict": "threshold"}])) is None
    assert "at least 3 model sizes" in _empty_reason(_table("size_effect", [{"Models": 1}, {"Models": 2}]))
    assert "no compressed result" in _empty_reason(_table("decoupling", []))
