"""Where the benchmark's declarative data lives.

In a checkout (or an editable install) `tasks/` and `benchmark/` sit beside the package; a wheel carries them as
`cpbench/_data/{tasks,benchmark}` (see pyproject's force-include). The checkout wins so that edits take effect.
"""

from __future__ import annotations

import os
from pathlib import Path

_PKG = Path(__file__).resolve().parent.parent  # the cpbench package (this file is cpbench/base/paths.py)

# Where `cpbench run` / `cpbench sweep` write unless --results says otherwise: a working folder (ignored by git in
# this repository), never the published tree `results/`, which only the study's documented command writes
# (docs/findings.md). So a fresh clone's first run computes everything and leaves `git status` clean.
DEFAULT_RESULTS = "runs"


def data_dir(name: str) -> Path:
    """Directory of the shipped `tasks` or `benchmark` definitions."""
    for candidate in (_PKG.parent / name, _PKG / "_data" / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"cpbench data directory {name!r} not found beside the package")


def cache_dir() -> Path:
    """Root of cpbench's caches (compressed checkpoints, converted models, score chunks)."""
    root = os.environ.get("CPBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "cpbench"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path
