"""A sweep grid -> WorkUnits: the options of `cpbench run` (one plan) applied to each model of `--models` (or the
suite's model), one unit per (model, recipe), the baseline first for each model."""

from __future__ import annotations

from typing import Any, Sequence

from cpbench.base.errors import CpbenchError


def grid_units(models: Sequence[str] | None, **run_options: Any) -> tuple[Any, list[Any]]:
    """(RunPlan shared by the grid, units). `run_options` are `cpbench.run.plan.plan_from_options` keywords."""
    from cpbench.run.plan import plan_from_options
    from cpbench.run.unit import units_from_plan

    names = list(dict.fromkeys(models or []))
    if run_options.get("candidates") and len(names) != 1:
        raise CpbenchError("--candidate is judged against one base model: give exactly one --models")
    plan = plan_from_options(model=names[0] if names else None, **run_options)
    units: list[Any] = []
    seen: set[str] = set()
    for name in names or [plan.model]:
        model_units = units_from_plan(plan, model=name)
        for unit in model_units + _candidates(plan, model_units[0]):
            if unit.uid in seen:  # two spellings of one model (alias and name)
                continue
            seen.add(unit.uid)
            units.append(unit)
    if not units:
        raise CpbenchError("the sweep has no units (no models or no recipes)")
    return plan, units


def _candidates(plan: Any, base: Any) -> list[Any]:
    """Candidate units, each checked pairable with the base (same tokenizer and vocabulary) before anything runs."""
    from cpbench.run.unit import candidate_units

    units = candidate_units(plan, base)
    if units:
        from cpbench.weights import models
        from cpbench.weights.candidates import require_pairable

        tok, cfg = models.load_tokenizer(base.model), models.model_config(base.model)
        for u in units:
            require_pairable(tok, cfg, u.candidate, base.model.name)
    return units
