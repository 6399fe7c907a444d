"""The unit of work: one (model, weights) and every task x prompt x shots cell scored on them, resolved once.

Loading and compressing dominate the cost of a cell, and checkpoints (up to ~140 GB) must not travel, so the unit
that a runner or a cluster executor schedules is one model under one recipe (the baseline is a unit too) with all of
its cells. `units_from_plan` resolves a `RunPlan` into `WorkUnit`s once: the model entry (registry / HF id / local
directory), the recipe, the cell run keys and the options that decide the numbers. `cpbench run` executes them one
after another in-process (`cpbench.run.runner.run_work_unit`); `cpbench sweep` ships the same objects (JSON) to Ray or SLURM
workers.

Weights identity: `unit_identity(unit, device)` names the weights a unit scores *before* anything is compressed
(the compressed-checkpoint cache key, or the base model's pinned identity + recipe), so a driver can tell which
cells are already done without loading a model. It equals what the runner records in the artifact's provenance
(`weights_id`) after compressing.

No torch import at module level: the sweep driver plans without it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field

from cpbench.weights.compress.calibration import CalibrationSpec
from cpbench.base.errors import CpbenchError
from cpbench.weights.models import Candidate, ModelEntry
from cpbench.specs.recipes import Recipe
from cpbench.base.runkey import AnalysisKey, ScoreKey, safe_part

if TYPE_CHECKING:  # pragma: no cover
    from cpbench.run.plan import RunPlan


class UnitOptions(BaseModel):
    """Every option that decides a unit's numbers or where they go (shared by all units of one plan): the part of
    the run plan (cpbench.run.plan.RunPlan) a sweep ships to its workers as JSON, taken from the plan by name
    (`units_from_plan`); `prompts`, `shots` and `data_tag` say what scoring actually does."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasks: tuple[str, ...]
    prompts: tuple[str, ...] = Field(description="prompt methods actually scored (cloze: base only)")
    shots: int = Field(default=0, ge=0, description="shots actually scored (cloze: 0)")
    chat: Literal["none", "v1", "v2"] = "none"
    scoring: Literal["letter", "cloze"] = "letter"
    data: str = Field(description="what --data said: samples | prepared | original | a local item file")
    data_tag: str = Field(description="the run key's data field (file:<sha> for a local file)")
    limit: int | None = Field(default=None, ge=1)
    device: str = "auto"
    dtype: str = "auto"
    scorer: str = Field(default="hf", description="the backend, by cpbench.backends.registry name")
    batch_size: int | None = Field(default=None, ge=1)
    chunk_size: int = Field(default=256, ge=1)
    calibration: CalibrationSpec = CalibrationSpec()
    analysis: AnalysisKey = AnalysisKey()
    suite: str | None = None
    scores: tuple[str, ...] = Field(default=("lac", "aps"), description="conformal scores of the records")
    task_data: dict[str, str] = Field(default_factory=dict, description="per-task item sources (--data qa=PATH)")
    order_seed: int | None = Field(default=None, description="sequential gate: items in a fixed random order")

    def data_for(self, task: str) -> str:
        return self.task_data.get(task, self.data)

    def tag_for(self, task: str) -> str:
        """The run key's data field of one task (per-task sources differ from the default's tag)."""
        if task not in self.task_data:
            tag = self.data_tag
        else:
            from cpbench.specs.tasks import data_tag

            tag = data_tag(self.task_data[task])
        if self.order_seed is not None:  # the sequential gate's item order: other items under a --limit
            from cpbench.run.stages import seq_tag

            tag = seq_tag(tag, self.order_seed)
        return tag


class WorkUnit(BaseModel):
    """One model under one recipe and the cells to score on it. Serialisable (`model_dump_json`) for workers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelEntry
    recipe: Recipe
    options: UnitOptions
    cells: tuple[ScoreKey, ...]
    notes: tuple[str, ...] = Field(default=(), description="run-level notes copied into every artifact")
    candidate: Candidate | None = Field(
        default=None, description="someone else's weights judged against `model` (recipe: the baseline; the cells "
        "carry the candidate's name in the recipe slot)"
    )

    @property
    def label(self) -> str:
        """The recipe slot of the unit's cells: the recipe name, or the candidate's name."""
        return self.candidate.name if self.candidate is not None else self.recipe.name

    @property
    def name(self) -> str:
        """`<model key>/<recipe or candidate>`: how progress lines and summaries name the unit."""
        return f"{self.model.key}/{self.label}"

    @property
    def uid(self) -> str:
        """Filesystem-safe id, unique per (model, recipe, options): claim files and worker folders use it."""
        digest = hashlib.sha256(self.model_dump_json(exclude={"cells", "notes"}).encode()).hexdigest()[:12]
        return f"{safe_part(self.model.key)}--{safe_part(self.label)}--{digest}"

    def with_cells(self, cells: Sequence[ScoreKey]) -> WorkUnit:
        """The same unit restricted to `cells` (e.g. the ones not done yet)."""
        return self.model_copy(update={"cells": tuple(cells)})

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkUnit:
        return cls.model_validate_json(text)


def scored_prompts(plan: RunPlan) -> tuple[list[str], int, list[str]]:
    """(prompt methods, shots, notes) actually scored: cloze reads the item alone, without instruction or shots."""
    if plan.scoring == "cloze" and (len(plan.prompts) > 1 or list(plan.prompts) != ["base"] or plan.shots):
        note = "cloze scoring reads the item alone (no instruction, no demonstrations): scored prompt 'base', 0 shots"
        return ["base"], 0, [note]
    return list(plan.prompts), plan.shots, []


def units_from_plan(plan: RunPlan, model: ModelEntry | str | None = None) -> list[WorkUnit]:
    """One WorkUnit per recipe of the plan (the baseline first), resolved once; no torch, no model loading.
    `model` replaces `plan.model` (a sweep plans several models with one plan)."""
    from cpbench.weights import models
    from cpbench.specs import recipes
    from cpbench.weights.compress import CalibrationSpec as _Spec
    from cpbench.specs.tasks import data_tag

    from cpbench.run.options import apply_model_options

    entry = models.resolve(model if model is not None else plan.model)
    entry = apply_model_options(entry, plan.revision, plan.model_args, plan.trust_remote_code)
    task_data = dict(plan.task_data)
    prompts, shots, notes = scored_prompts(plan)
    samples = any(task_data.get(t, plan.data) == "samples" for t in plan.tasks)
    notes = list(entry.source_notes()) + (
        ["items are the tasks' offline smoke-test samples, not benchmark data"] if samples else []
    ) + notes
    # the options that decide a unit's numbers: the plan's own values, except what scoring actually does
    derived = dict(prompts=tuple(prompts), shots=shots, data=str(plan.data), data_tag=data_tag(plan.data),
                   calibration=plan.calibration or _Spec(), task_data=task_data)  # fmt: skip
    options = UnitOptions(**{name: getattr(plan, name) for name in UnitOptions.model_fields if name not in derived},
                          **derived)  # fmt: skip
    units = []
    for name in plan.recipes:
        recipe = recipes.resolve(name)
        cells = tuple(
            ScoreKey(model=entry.key, recipe=recipe.name, task=task, prompt=method, shots=shots, chat=plan.chat,
                     scoring=plan.scoring, data=options.tag_for(task), limit=plan.limit, dtype=options.dtype,
                     scorer=options.scorer)  # fmt: skip
            for task in plan.tasks
            for method in prompts
        )
        units.append(WorkUnit(model=entry, recipe=recipe, options=options, cells=cells, notes=tuple(notes)))
    return units


def candidate_units(plan: RunPlan, base: WorkUnit) -> list[WorkUnit]:
    """One unit per candidate of the plan (`plan.candidates`), scored on the base unit's cells under its own name."""
    out = []
    for cand in plan.candidates:
        cells = tuple(k.model_copy(update={"recipe": cand.name}) for k in base.cells)
        out.append(base.model_copy(update={"candidate": cand, "cells": cells}))
    return out


# ------------------------------------------------------------------------------------------------ weights identity
def unit_identity(unit: WorkUnit, device: str) -> Any:
    """The WeightsIdentity (`cpbench.weights.identity`) a unit's artifacts carry when scored on `device`, known
    before compressing: a candidate's own pin whatever the device; otherwise the checkpoint cache key, which depends
    on the compute dtype (fp32 on CPU, bf16 on GPU) and on the calibration sample (tokenizer + calibration spec),
    nothing else, and needs no weights (cpbench.weights.compress.checkpoint_key)."""
    from cpbench.weights import identity as weights
    from cpbench.weights.compress import checkpoint_key

    if unit.candidate is not None:
        return unit.candidate.weights()
    key = checkpoint_key(unit.model, unit.recipe, unit.options.calibration, device)
    return weights.of_recipe(unit.model, unit.recipe, key.digest if key is not None else None)


# ------------------------------------------------------------------------------------------------ prompts
@dataclass
class CellInputs:
    """The prompts of one (task, prompt method) cell, built once and shared by every unit of the model."""

    task: str
    method: str
    prompts: list[Any]
    prompts_hash: str
    data_source: dict[str, Any]


def build_inputs(
    options: UnitOptions, tokenizer: Any = None, cells: Sequence[ScoreKey] | None = None
) -> dict[tuple[str, str], CellInputs]:
    """Items and prompts of every (task, method) cell (only those of `cells` when given). `tokenizer` is the base
    model's (needed for chat v1 only)."""
    from cpbench.specs.tasks import build_prompts, load_items, load_task, prompts_hash, source_provenance

    wanted = None if cells is None else {(k.task, k.prompt) for k in cells}
    out: dict[tuple[str, str], CellInputs] = {}
    for task in options.tasks:
        if wanted is not None and not any(t == task for t, _ in wanted):
            continue
        spec = load_task(task)
        prov = source_provenance(spec, options.data_for(task))
        items = load_items(spec, options.data_for(task))  # all of them: the demonstrations must be there even with --limit
        for method in options.prompts:
            if wanted is not None and (task, method) not in wanted:
                continue
            prompts = build_prompts(spec, items, method=method, shots=options.shots, chat=options.chat,
                                    tokenizer=tokenizer if options.chat == "v1" else None)  # fmt: skip
            if options.order_seed is not None:  # the sequential gate's fixed random order (cpbench.run.seqrun)
                from cpbench.run.stages import seq_order

                prompts = [prompts[j] for j in seq_order([str(p.item_id) for p in prompts], task, options.order_seed)]
            prompts = prompts[: options.limit] if options.limit else prompts  # --limit: evaluated items
            out[(task, method)] = CellInputs(task, method, prompts, prompts_hash(prompts), prov)
    return out


def check_enough_items(inputs: dict[tuple[str, str], CellInputs], analysis: AnalysisKey) -> None:
    """Fail before compressing or scoring anything when a cell has too few items for the conformal analysis."""
    import math

    from cpbench.results.conformal.quantile import min_calibration_size

    need = min_calibration_size(analysis.alpha)
    for cell in inputs.values():
        n = len(cell.prompts)
        if math.floor(analysis.cal_ratio * n) < need:
            n_min = math.ceil(need / analysis.cal_ratio)
            raise CpbenchError(
                f"task {cell.task}: {n} evaluated items leave {math.floor(analysis.cal_ratio * n)} for calibration; "
                f"alpha {analysis.alpha:g} needs at least {need} (use --limit {n_min} or more, or a larger --alpha)"
            )
