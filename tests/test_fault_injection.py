"""The CI variant of benchmarks/fault_injection.py: a few SIGKILLs of `cpbench run` at random moments on the tiny
model, reruns, and the script's checks (no corrupt file, finished cells kept byte for byte, final artifacts and
records equal to an uninterrupted run's, no leftovers). The full version (>= 20 kills) is run by hand; its figures
are in docs/reliability.md."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_killed_runs_lose_and_corrupt_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "fault_injection.py"
    spec = importlib.util.spec_from_file_location("fault_injection", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rc = module.main(["--kills", "3", "--seed", "7", "--keep", str(tmp_path / "faults")])
    out = capsys.readouterr().out
    assert "summary: 3 kills" in out, out
    assert rc == 0, out
