"""The base install works on its own: `cpbench --version`, `analyze`, `leaderboard --no-plots` and `check` import
only what pyproject's base `dependencies` bring (and what those bring in turn). A child process refuses every other
top-level import, so an undeclared import (the issue's `click`, which typer 0.29 no longer brings) fails here even
though the test environment has it installed. `.ci/run` additionally checks a real bare venv
(`scripts/check_bare_install.sh`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def allowed_imports() -> set[str]:
    """Top-level import names of the base dependencies and their own (non-extra) dependencies, recursively."""
    base = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    todo, dists = [_name(r) for r in base], set()
    while todo:
        d = todo.pop()
        if d in dists:
            continue
        dists.add(d)
        try:
            reqs = metadata.requires(d) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_name(r) for r in reqs if "extra ==" not in r and "extra==" not in r]
    names = set()
    for top, owners in metadata.packages_distributions().items():
        if any(o.lower().replace("_", "-") in dists for o in owners):
            names.add(top)
    return names


GUARD = r"""
import sys, json, runpy
allowed = set(json.loads(sys.argv[1])) | set(sys.stdlib_module_names) | {"cpbench", "_distutils_hack"}
def probing():  # importlib.util.find_spec("x"): "is it installed?", which a bare install answers too
    f = sys._getframe(2)
    for _ in range(3):
        if f is None:
            return False
        if f.f_code.co_name == "find_spec" and "importlib" in f.f_code.co_filename and "util" in f.f_code.co_filename:
            return True
        f = f.f_back
    return False
class Guard:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top not in allowed and not top.startswith("_") and not probing():
            raise ModuleNotFoundError(f"undeclared import {name!r}: not a base dependency of cpbench", name=name)
        return None
sys.meta_path.insert(0, Guard())
sys.argv = ["cpbench"] + sys.argv[2:]
from cpbench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cpbench(allowed: set[str], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    return subprocess.run([sys.executable, "-c", GUARD, json.dumps(sorted(allowed)), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def allowed():
    names = allowed_imports()
    assert {"numpy", "pandas", "pydantic", "typer", "rich", "yaml"} <= names
    assert "torch" not in names and "transformers" not in names
    return names


def test_guard_catches_an_undeclared_import(allowed, tmp_path):
    r = _cpbench(allowed - {"click"}, "--version", cwd=tmp_path)  # what a bare install without click looked like
    assert r.returncode != 0 and "undeclared import 'click'" in r.stderr


def test_analysis_commands_need_only_the_base_dependencies(allowed, tmp_path):
    r = _cpbench(allowed, "--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("cpbench "), r.stderr
    arts = sorted((REPO / "results").rglob("artifacts/*.parquet"))
    if not arts:
        pytest.skip("no committed results")
    r = _cpbench(allowed, "analyze", str(arts[0]), cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    r = _cpbench(allowed, "leaderboard", str(REPO / "results"), "--no-plots", "--out", str(tmp_path / "lb"), cwd=REPO)
    assert r.returncode == 0 and (tmp_path / "lb" / "leaderboard.md").is_file(), r.stderr[-2000:]
    model_dir = arts[0].parents[2]
    base = model_dir / "base" if (model_dir / "base").is_dir() else model_dir / "fp16"
    cand = next(d for d in sorted(model_dir.iterdir()) if d.is_dir() and d.name not in ("base", "fp16"))
    r = _cpbench(allowed, "check", "--baseline", str(base), "--candidate", str(cand), cwd=REPO)
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr[-2000:]
