"""Fixtures shared by the tests that run cpbench on the tiny model: import them into a test module by name."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test gets its own cache and works in tmp_path, so a default `results/` lands there, not in the repo."""
    root = tmp_path / "cache"
    monkeypatch.setenv("CPBENCH_CACHE", str(root))
    monkeypatch.chdir(tmp_path)
    return root


@pytest.fixture(scope="module")
def tiny_dir():
    """The tiny random Llama's directory (built once per process, see tests/tiny_model.py)."""
    from tiny_model import tiny_model_dir

    return str(tiny_model_dir())
