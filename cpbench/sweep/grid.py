"""A sweep grid -> WorkUnits: the options of `cpbench run` (one plan) applied to each model of `--models` (or the
suite's model), one unit per (model, recipe), the baseline first for each model."""

from __future__ import annotations

from typing import Any, Sequence

from cpbench.errors import CpbenchError


def grid_units(models: Sequence[str] | None, **run_options: Any) -> tuple[Any, list[Any]]:
    """(RunPlan shared by the grid, units). `run_options` are `cpbench.runner.plan_from_options` keywords."""
    from cpbench.runner import plan_from_options
    from cpbench.unit import units_from_plan

    names = list(dict.fromkeys(models or []))
    plan = plan_from_options(model=names[0] if names else None, **run_options)
    units: list[Any] = []
    seen: set[str] = set()
    for name in names or [plan.model]:
        for unit in units_from_plan(plan, model=name):
            if unit.uid in seen:  # two spellings of one model (alias and name)
                continue
            seen.add(unit.uid)
            units.append(unit)
    if not units:
        raise CpbenchError("the sweep has no units (no models or no recipes)")
    return plan, units
