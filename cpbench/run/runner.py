"""`cpbench run` orchestration: compress (cached) -> score (cached) -> analyze -> store, baseline and recipes.

For one model and a list of recipes (the uncompressed baseline always first), every (task, prompt method) cell is
scored into a logits artifact and analysed into a result record:

    results/<model>/<recipe>/artifacts/<ScoreKey.slug()>.parquet    the logits artifact (input of `cpbench analyze`)
    results/<model>/<recipe>/<RunKey.slug()>.json                   the result record (results.store.write_result)

The artifacts live in the results tree, next to the records they produced, so a results directory is self-contained
(ship it, re-analyse it with another protocol, without a GPU). They double as the score cache: a rerun reuses an
artifact when its provenance matches the cell exactly (ScoreKey, prompts hash, weights id, device type); anything
else is rescored. Unfinished scoring lives in chunk files under `cache_dir()/scores` until the artifact is written,
so an interrupted run resumes where it stopped. Compressed checkpoints are cached by cpbench.weights.compress.

Nothing is lost or silently replaced (cpbench.run.outputs, cpbench.base.locks): reuse is decided before compressing (the
weights id is known without compressing), so a rerun whose cells all exist loads and compresses nothing; a stored
artifact or record of different content is never replaced without --force; an equal record is not rewritten; one
process works on a cell at a time, so concurrent runs on one results tree and cache split the work.

Scoring goes through the backend the plan names (cpbench.backends: the runner never asks which one it is). Models
are loaded one at a time (baseline, then each recipe, then each candidate) and freed before the next. Recipes that
cannot run on the device (bitsandbytes, or `requires: cuda`) are skipped with the reason printed when they come from a
suite, and are an error when asked for by name with --quant.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from cpbench.backends.base import WeightsRequest
from cpbench.backends.registry import get_backend
from cpbench.base.errors import CpbenchError
from cpbench.run.cells import Cell, artifact_path, score_cells
from cpbench.run.plan import RunPlan
from cpbench.run.provenance import unit_provenance, with_weights
from cpbench.run.unit import unit_identity


@dataclass
class RunOutcome:
    plan: RunPlan
    model_key: str
    cells: list[Cell]
    skipped: list[tuple[str, str]]  # (recipe, reason)
    notes: list[str]
    wall_s: float
    sequential: dict | None = None  # cpbench run --until-decided: design and per-cell decisions (cpbench.run.seqrun)


def _weights(entry: Any, recipe: Any, ckpt: Any) -> Any:
    """The WeightsIdentity of what a unit scores (cpbench.weights.identity owns the rules): the checkpoint's content
    address once one exists, or the base model's identity (+ recipe)."""
    from cpbench.weights import identity as weights

    return weights.of_recipe(entry, recipe, ckpt.report.get("cache_key") if ckpt.path is not None else None)


def run(plan: RunPlan, echo: Callable[[str], None] = print, progress: bool = True) -> RunOutcome:
    """One pass over the plan (a sequential stage is one such pass; `cpbench.run.execute` chooses); returns every
    cell's record and where it was written."""
    from cpbench.run import preflight as failfast
    from cpbench.run.unit import build_inputs, candidate_units, check_enough_items, units_from_plan
    from cpbench.specs.tasks.sources import describe_source
    from cpbench.weights import models

    t0 = time.perf_counter()
    units = units_from_plan(plan)  # model, recipes and cells resolved once
    # a candidate travels as a unit, as in a sweep: someone's weights on the base unit's cells, under its own name
    recipe_units = len(units)
    units += candidate_units(plan, units[0])
    if plan.only is not None:  # a sequential stage: only the open cells (and their baseline cells)
        units = [u.model_copy(update={"cells": tuple(k for k in u.cells if (
            "__base__" if i == 0 else k.recipe, k.task, k.prompt) in plan.only or (k.recipe, k.task, k.prompt)
            in plan.only)}) for i, u in enumerate(units)]  # fmt: skip
    entry = units[0].model
    device = models.resolve_device(plan.device)
    dtype = str(models.resolve_dtype(None if plan.dtype == "auto" else plan.dtype, device, entry))
    dtype = dtype.removeprefix("torch.")
    # Every cheap check (writable outputs, offline state, recipe x model, GPU-only recipes) before the first
    # expensive step: tokenizer download, GGUF conversion, compression, scoring.
    ok, skipped, warnings = failfast.preflight(
        entry, [u.recipe for u in units[:recipe_units]], device, results=plan.results,
        strict_recipes=plan.strict_recipes, calibration=plan.calibration,
    )  # fmt: skip
    threads = models.current_threads()
    backend = get_backend(plan.backend if plan.backend is not None else plan.scorer)
    backend.check(device, plan.scoring)  # before compressing anything (vLLM: CUDA and the vllm package)
    notes = list(units[0].notes)
    echo(f"cpbench run: model {entry.name} ({entry.source}), device {device} ({dtype}, {threads} thread(s)), "
         f"recipes {', '.join(plan.recipes)}, tasks {', '.join(plan.tasks)}, {plan.scoring} scoring, "
         f"data {describe_source(plan.data)}" + "".join(f", {t}={s}" for t, s in plan.task_data.items())
         + (f", candidates {', '.join(c.name for c in plan.candidates)}" if plan.candidates else "")
         + (f", limit {plan.limit}" if plan.limit else ""))  # fmt: skip
    if plan.model_note:
        echo(f"note: {plan.model_note}")
    for w in warnings:
        echo(f"warning: {w}")

    # Items and prompts are built once (with the base model's tokenizer, needed for chat templates only). A hub
    # model's tokenizer is loaded up front as well: it fetches config.json, so weights ids pin the resolved commit
    # (not "main") from the first run on, and a gated or offline model fails here with one line.
    tokenizer = plan.loaded[1] if plan.loaded is not None else None  # an in-memory base brings its own
    if tokenizer is None and (plan.chat == "v1" or entry.source == "hub"):
        tokenizer = models.load_tokenizer(entry)  # revision, trust_remote_code and gguf_file passed through
    inputs = build_inputs(units[0].options, tokenizer)
    check_enough_items(inputs, plan.analysis)
    # every prompt fits the model's context, before any compression or scoring (tokenizes only long prompts)
    failfast.check_context(
        inputs, plan.loaded[0].config.to_dict() if plan.loaded is not None else failfast.cached_model_config(entry),
        lambda: tokenizer if tokenizer is not None else models.load_tokenizer(entry), entry.name, plan.scoring,
    )  # fmt: skip
    if plan.candidates:  # refused before any weights load: other token ids make option logits incomparable
        from cpbench.weights.candidates import require_pairable

        base_tok = plan.loaded[1] if plan.loaded is not None else (tokenizer or models.load_tokenizer(entry))
        base_cfg = plan.loaded[0].config.to_dict() if plan.loaded is not None else models.model_config(entry)
        for cand in plan.candidates:
            require_pairable(base_tok, base_cfg, cand, entry.name)

    cells: list[Cell] = []
    runnable = [u for u in units if u.recipe.name in {r.name for r in ok}]  # the preflight decided
    for name, problem in skipped:
        echo(f"[{name}] skipped on {device}: {problem}")
    if plan.loaded is not None and len(runnable[:recipe_units]) > 1:
        raise CpbenchError("an in-memory base model cannot be compressed by cpbench recipes (it has no files to "
                           "reload); pass compressed models as candidates")  # fmt: skip
    if plan.results is not None:
        _preflight(runnable, inputs, device, plan, echo)
    for unit in runnable:
        if not unit.cells:
            continue
        in_memory = plan.loaded if unit.recipe.is_baseline and unit.candidate is None else None
        cells.extend(run_work_unit(unit, inputs, device, plan.results, echo=echo, progress=progress,
                                   force=plan.force, loaded=in_memory, analyze=plan.analyze,
                                   backend=backend))  # fmt: skip
    kept = [c for c in cells if c.status == "kept"]
    if kept:
        from cpbench.run.outputs import kept_message

        more = f" ({len(kept) - 1} more record(s) kept likewise)" if len(kept) > 1 else ""
        raise CpbenchError(kept_message(kept[0].result_path, kept[0].record) + more)
    return RunOutcome(plan, entry.key, cells, skipped, notes, time.perf_counter() - t0)


def _preflight(units: Sequence[Any], inputs: dict[tuple[str, str], Any], device: str, plan: RunPlan,
               echo: Callable[[str], None]) -> None:  # fmt: skip
    """Before any compression or scoring: every stored artifact checked against what this run would produce, with
    weights ids known without compressing (a different artifact is never replaced without --force); the outputs
    and, when there is work, the caches checked writable; leftovers of dead runs swept."""
    from cpbench.base import locks
    from cpbench.base.paths import cache_dir
    from cpbench.run.outputs import artifact_conflict, check_writable, refuse_overwrite
    from cpbench.weights.compress import cache

    results = Path(plan.results)
    groups = [(unit.cells, unit_identity(unit, device).weights_id) for unit in units]
    work = False
    for keys, wid in groups:
        for key in keys:
            path = artifact_path(results, key)
            if plan.force or not path.exists():
                work = True
                continue
            why = artifact_conflict(path, key, inputs[(key.task, key.prompt)].prompts_hash, wid, device)
            if why:
                raise refuse_overwrite(path, why)
    targets = [(results, "results")]
    if work:
        root = cache_dir()
        targets += [(root / "checkpoints", "compressed checkpoints"), (root / "scores", "score chunks"),
                    (root / "models", "converted models")]  # fmt: skip
    check_writable(targets)
    swept = cache.sweep() + locks.sweep(cache_dir() / "models")
    for d in sorted({p.parent for p in results.rglob(".*.lock")}):
        swept += locks.sweep(d)
    if swept:
        echo(f"removed {len(swept)} leftover(s) of interrupted runs: {', '.join(p.name for p in swept[:3])}"
             + (" ..." if len(swept) > 3 else ""))  # fmt: skip


def run_work_unit(unit: Any, inputs: dict[tuple[str, str], Any], device: str, results: Path | None,
                  **options: Any) -> list[Cell]:  # fmt: skip
    """One WorkUnit's cells, whichever it is: a recipe of the model (`run_unit`) or a candidate judged against it
    (`run_candidate`). `cpbench run` and every `cpbench sweep` executor go through here; `options` are run_unit's."""
    if unit.candidate is not None:
        options.pop("loaded", None)  # someone else's weights, never the in-memory base
        return run_candidate(unit, inputs, device, results, **options)
    return run_unit(unit, inputs, device, results, **options)


def run_unit(
    unit: Any,
    inputs: dict[tuple[str, str], Any],
    device: str,
    results: Path,
    *,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    force: bool = False,
    analyze: bool = True,
    loaded: Any = None,
    backend: Any = None,
) -> list[Cell]:
    """Score every cell of one WorkUnit on `device`, compressing (cached) and loading the weights only when a cell
    must be scored, writing artifacts (and, with `analyze`, result records) under `results`. `inputs` are the cells'
    prompts (`cpbench.run.unit.build_inputs`). Shared by `cpbench run` and every `cpbench sweep` executor. `loaded`: the
    (model, tokenizer) of an in-memory base; `backend`: a cpbench.backends.base.Backend (default: the one the unit's
    options name, from cpbench.backends.registry)."""
    from cpbench.base import progress as progress_mod
    from cpbench.base import memory
    from cpbench.weights.compress import compress, stage_line

    entry, recipe, opts = unit.model, unit.recipe, unit.options
    backend = get_backend(backend if backend is not None else opts.scorer)
    identity = unit_identity(unit, device)  # before compressing: reuse is decided first
    provenance = unit_provenance(unit, identity)

    def load() -> Any:
        tr = time.perf_counter()
        if not backend.needs_weights:  # finished outputs read from a file: nothing to compress or load
            return backend.load(WeightsRequest(entry=entry, device=device, dtype=opts.dtype, recipe=recipe))
        if recipe.is_baseline or recipe.load_time:
            ckpt = compress(entry, recipe, opts.calibration, device, on_wait=echo)
        else:  # minutes when not cached: cpbench's own progress (llm-compressor's per-layer steps nest in it)
            reporter = progress_mod.current() if progress else progress_mod.Reporter()
            with reporter.task(f"[{recipe.name}] compress {entry.name}") as step:
                ckpt = compress(entry, recipe, opts.calibration, device, on_wait=echo)
                step.note("cached checkpoint" if ckpt.cached else "written and verified")
        if ckpt.path is not None:
            echo(f"[{recipe.name}] checkpoint {'cached' if ckpt.cached else 'written'}: {ckpt.path} "
                 f"({time.perf_counter() - tr:.1f} s)")  # fmt: skip
            stages = "" if ckpt.cached else stage_line(ckpt.report)  # where the time went: compress, save, verify
            if stages:
                echo(f"[{recipe.name}] {stages}")
        actual = _weights(entry, recipe, ckpt)
        if actual.weights_id != identity.weights_id:  # the reuse check and the provenance must agree
            raise CpbenchError(f"internal: weights id {actual.weights_id} after compressing differs from "
                               f"{identity.weights_id} predicted before it")  # fmt: skip
        with_weights(provenance, ckpt.report, ckpt.path)
        # an in-memory base (Python API) is scored as given; its identity is its content fingerprint
        tl, n0 = time.perf_counter(), len(memory.stages())
        handle = backend.load(WeightsRequest(entry=entry, device=device, dtype=opts.dtype, recipe=recipe,
                                             checkpoint=ckpt, loaded=loaded))  # fmt: skip
        # the load alone ("model loaded (X s)"), or the stages inside it (a first GGUF conversion) named as such
        echo(f"[{recipe.name}] {memory.timing_line(memory.since(n0), time.perf_counter() - tl)}")
        return handle

    return score_cells(recipe.name, unit.cells, identity.weights_id, load, provenance, opts, inputs, device, results,
                       backend=backend, echo=echo, progress=progress, force=force, analyze=analyze)


def run_candidate(
    unit: Any,
    inputs: dict[tuple[str, str], Any],
    device: str,
    results: Path,
    *,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    force: bool = False,
    analyze: bool = True,
    backend: Any = None,
) -> list[Cell]:
    """Score a candidate unit (`unit.candidate`, a cpbench.weights.models.Candidate, on the base model's cells with its
    name in the recipe slot: cpbench.run.unit.candidate_units): the results land beside the base's and pair with
    them by items. Its recipe spec is what cpbench reads of it without
    loading; what it measures on the loaded weights goes into `compression_report`."""
    from cpbench.weights import candidates

    candidate, base = unit.candidate, unit.model
    identity = unit_identity(unit, device)
    backend = get_backend(backend if backend is not None else unit.options.scorer)
    provenance = unit_provenance(unit, identity)

    def load() -> Any:
        tl = time.perf_counter()
        handle = backend.load(WeightsRequest(entry=base, device=device, candidate=candidate))
        echo(f"[{candidate.name}] model loaded ({time.perf_counter() - tl:.1f} s)")
        with_weights(provenance, candidates.measure(handle[0], candidate))  # what the loaded weights are
        return handle

    return score_cells(candidate.name, list(unit.cells), identity.weights_id, load, provenance, unit.options, inputs,
                       device, results, backend=backend, echo=echo, progress=progress, force=force, analyze=analyze)
