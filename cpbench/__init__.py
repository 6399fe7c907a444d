"""cpbench: conformal-prediction benchmark for compressed LLMs.

Data flows one way: registry -> compress -> score (option-logits artifact) -> conformal -> metrics -> results ->
leaderboards. Everything after the artifact is numpy/pandas only and runs anywhere.

Three ways in: the `cpbench` command line, the Python API (`cpbench.evaluate`, `cpbench.compare`, loaded on first
use so that `import cpbench` stays light: no torch, no pandas), and the CI action (action.yml, docs/ci-gate.md).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Report", "__version__", "compare", "evaluate"]

_LAZY = {"evaluate": "cpbench.api", "compare": "cpbench.api", "Report": "cpbench.api"}


def __getattr__(name: str) -> Any:  # PEP 562: the API module (and what it imports) loads on first access
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cpbench' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
