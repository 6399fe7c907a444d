"""The package's layering is a rule, not a habit: import-linter's contracts (pyproject.toml) hold, and no import
cycle exists between modules, function-local imports included (docs/design.md)."""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest
import tomllib
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.find_modules_directly_imported_by(w)))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_import_linter_contracts_are_kept(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0, "run `lint-imports`"


def test_layers_contract_can_fail(tmp_path, monkeypatch):
    """The same layers upside down must be reported broken: the contract really reads the import graph."""
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in conf["contracts"] if c["type"] == "layers")["layers"]
    upside_down = "\n".join(f'    "{layer}",' for layer in reversed(layers))
    cfg = tmp_path / "importlinter.toml"
    cfg.write_text(f'[tool.importlinter]\nroot_package = "cpbench"\n\n[[tool.importlinter.contracts]]\n'
                   f'name = "upside down"\ntype = "layers"\nlayers = [\n{upside_down}\n]\n')  # fmt: skip
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(cfg), no_cache=True) == 1


def test_no_import_cycle_between_modules():
    assert _cycles(grimp.build_graph("cpbench", cache_dir=None, exclude_type_checking_imports=True)) == []


def test_cycle_finder_can_fail():
    class Graph:
        modules = {"a", "b", "c"}

        def find_modules_directly_imported_by(self, m):
            return {"a": {"b"}, "b": {"a"}, "c": set()}[m]

    assert _cycles(Graph()) == [["a", "b"]]


@pytest.mark.parametrize("layer", ["cpbench.results"])
def test_results_layer_loads_without_torch(layer):
    import subprocess
    import sys

    code = (f"import importlib, pkgutil, sys, {layer} as p\n"
            "for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.'):\n    importlib.import_module(m.name)\n"
            "bad = sorted(k for k in ('torch', 'transformers', 'llmcompressor', 'vllm') if k in sys.modules)\n"
            "assert not bad, bad\n")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)
