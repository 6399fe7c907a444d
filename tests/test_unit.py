"""cpbench.run.unit: a RunPlan resolves once into WorkUnits (model entry, recipe, cells) that serialise for workers, and
the weights identity a unit predicts before compressing is the one the runner records after compressing."""

from __future__ import annotations

import pytest

from cpbench.run.plan import plan_from_options
from cpbench.run.unit import WorkUnit, unit_identity, units_from_plan
from run_fixtures import tiny_dir  # noqa: F401  (pytest fixtures)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CPBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_units_are_resolved_once_and_round_trip(tiny_dir):
    plan = plan_from_options(model=tiny_dir, quant=["magnitude-50"], tasks=["qa", "rc"], prompts=["base", "task"],
                             data="samples", limit=18)  # fmt: skip
    units = units_from_plan(plan)
    assert [u.recipe.name for u in units] == ["base", "magnitude-50"]
    u = units[1]
    assert u.model.source == "local" and u.options.limit == 18 and u.options.data_tag == "samples"
    assert [(c.task, c.prompt) for c in u.cells] == [("qa", "base"), ("qa", "task"), ("rc", "base"), ("rc", "task")]
    assert all(c.recipe == "magnitude-50" and c.model == u.model.key for c in u.cells)
    back = WorkUnit.from_json(u.to_json())
    assert back == u and back.uid == u.uid
    assert units[0].uid != u.uid and u.with_cells(u.cells[:1]).uid == u.uid  # the uid names (model, recipe, options)
    assert any("smoke-test samples" in n for n in u.notes)


def test_cloze_units_score_base_prompts_without_shots(tiny_dir):
    plan = plan_from_options(model=tiny_dir, tasks=["qa"], prompts=["task"], shots=2, scoring="cloze", data="samples")
    (u,) = units_from_plan(plan)
    assert u.options.prompts == ("base",) and u.options.shots == 0 and u.cells[0].shots == 0
    assert any("cloze scoring reads the item alone" in n for n in u.notes)


def test_weights_identity_before_compressing_matches_the_checkpoint(tiny_dir, cache):
    from cpbench.weights.compress import CalibrationSpec, compress
    from cpbench.run.runner import _weights

    plan = plan_from_options(model=tiny_dir, quant=["magnitude-50"], tasks=["qa"], data="samples")
    base, pruned = units_from_plan(plan)
    assert unit_identity(base, "cpu").weights_id.startswith("local:") and "+" not in unit_identity(base, "cpu").weights_id
    predicted = unit_identity(pruned, "cpu").weights_id
    assert predicted.startswith("checkpoint:") and not (cache / "checkpoints").exists()  # nothing compressed
    assert unit_identity(pruned, "cuda").weights_id != predicted  # bf16 compute on GPU: other weights
    ckpt = compress(pruned.model, pruned.recipe, CalibrationSpec(), "cpu")
    assert _weights(pruned.model, pruned.recipe, ckpt).weights_id == predicted
